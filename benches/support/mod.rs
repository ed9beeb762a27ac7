//! What the root benchmarks share: a script that does nothing but say when it ran, its plan,
//! the measures taken around it (per-job cycle quantiles, CPU time, peak memory) and the
//! command-line conventions `cargo xtask bench` relies on.
//!
//! Each bench prints markdown (tables, notes, and `- Target:` lines that `cargo xtask bench`
//! gathers at the top of BENCHMARKS.md). A bench given arguments after `--` runs only the lines
//! whose key (the first column) is among them: `cargo bench ... --bench embedded -- 4`.

// Each bench compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::time::{SystemTime, UNIX_EPOCH};

use armada::prelude::*;
use armada::{JobResult, Plan, ProjectFiles, RunOverrides};
use serde::de::IgnoredAny;

/// A script that does nothing but return when it started (wall clock, nanoseconds since the
/// epoch): what is measured is Armada around it. The wall clock (not `Instant`) lets agents in
/// other processes be timed against the orchestrator's clock.
pub struct Noop;

impl Script for Noop {
    type Agent = PlainAgent;
    type Job = Job<IgnoredAny>;
    type Output = u64;

    async fn run(&self, _: &mut PlainAgent, _: &mut Job<IgnoredAny>) -> Result<u64, ScriptError> {
        Ok(wall_ns())
    }
}

/// Nanoseconds since the epoch, from the wall clock (comparable across processes).
pub fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64)
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

/// When each job started, grouped by agent, from the results of a [`Noop`] run.
#[derive(Default)]
pub struct Starts {
    by_agent: Vec<Vec<u64>>,
}

impl Starts {
    /// Follows a run to its end, recording when each job started.
    pub async fn follow(handle: armada::RunHandle) -> (armada::RunReport, Self) {
        let mut starts = Self::default();
        let report = handle
            .follow(|event| {
                if let armada::FollowEvent::Result(result) = event {
                    starts.record(result);
                }
            })
            .await
            .expect("the run ends");
        (report, starts)
    }

    /// Records a result.
    pub fn record(&mut self, result: &JobResult) {
        let (Some(agent), Some(started)) = (
            result.agent,
            result.output.as_ref().and_then(serde_json::Value::as_u64),
        ) else {
            return;
        };
        self.push(agent as usize, started);
    }

    /// Records that a job started on `agent` at `started` (from [`wall_ns`]).
    pub fn push(&mut self, agent: usize, started: u64) {
        if self.by_agent.len() <= agent {
            self.by_agent.resize_with(agent + 1, Vec::new);
        }
        self.by_agent[agent].push(started);
    }

    /// The first start of all.
    pub fn first(&self) -> Option<u64> {
        self.by_agent.iter().flatten().min().copied()
    }

    /// The job cycle of each agent: the time between two consecutive jobs starting on the same
    /// agent, which (prefetch 1) holds recording and acknowledging the first, and taking,
    /// decoding and starting the second. Returns (p50, p99) in microseconds.
    pub fn cycle_quantiles(&mut self) -> (f64, f64) {
        let mut cycles: Vec<u64> = Vec::new();
        for starts in &mut self.by_agent {
            starts.sort_unstable();
            cycles.extend(starts.windows(2).map(|pair| pair[1] - pair[0]));
        }
        cycles.sort_unstable();
        let at = |q: f64| {
            let index = ((cycles.len() as f64 * q) as usize).min(cycles.len().saturating_sub(1));
            cycles.get(index).map_or(f64::NAN, |&ns| ns as f64 / 1000.0)
        };
        (at(0.50), at(0.99))
    }
}

/// Seconds of CPU this process has used (user + system), from /proc.
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

/// A field of /proc/self/status in kilobytes (`VmHWM`: peak resident set; `VmRSS`: now).
pub fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The lines asked for on the command line (arguments that are not flags; cargo passes
/// `--bench`), or every line when none is.
pub fn wanted(key: &str) -> bool {
    let asked: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    asked.is_empty() || asked.iter().any(|arg| arg == key)
}

/// A `- Target:` line: met or missed, with the figure.
pub fn target(what: &str, met: bool, figure: &str) {
    let verdict = if met { "met" } else { "**MISSED**" };
    println!("- Target: {what}: {verdict} ({figure})");
}

/// The median of a few measures.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

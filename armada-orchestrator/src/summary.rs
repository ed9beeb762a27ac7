//! The end-of-run summary: counts, attempts, durations, agents and failures by error.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::path::Path;

use armada_core::AgentIndex;
use armada_core::backend::RunStatus;
use armada_core::wire::{JobResult, JobStatus};

use crate::RunReport;

/// Failure messages listed in the summary.
const TOP_ERRORS: usize = 5;

/// Gathers job results into the end-of-run summary.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    by_status: BTreeMap<JobStatus, u64>,
    attempts: u64,
    durations_ms: Vec<f64>,
    by_agent: BTreeMap<AgentIndex, u64>,
    errors: HashMap<String, u64>,
    evidence: Vec<String>,
}

impl Summary {
    /// Counts one job result.
    pub fn add(&mut self, result: &JobResult) {
        *self.by_status.entry(result.status).or_default() += 1;
        self.attempts += u64::from(result.attempts);
        if result.attempts > 0 {
            self.durations_ms.push(result.duration_ms);
        }
        if let Some(agent) = result.agent {
            *self.by_agent.entry(agent).or_default() += 1;
        }
        if result.status != JobStatus::Succeeded
            && let Some(error) = &result.error
        {
            *self.errors.entry(error.clone()).or_default() += 1;
        }
        if let Some(folder) = &result.evidence {
            self.evidence.push(folder.clone());
        }
    }

    /// Jobs counted.
    pub fn total(&self) -> u64 {
        self.by_status.values().sum()
    }

    /// Jobs that succeeded.
    pub fn succeeded(&self) -> u64 {
        self.count(JobStatus::Succeeded)
    }

    /// Jobs that failed for good.
    pub fn failed(&self) -> u64 {
        self.count(JobStatus::Failed)
    }

    /// Jobs with this status.
    pub fn count(&self, status: JobStatus) -> u64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }

    /// The summary as a small table.
    pub fn render(&self, report: &RunReport, results: Option<&Path>) -> String {
        let mut out = String::new();
        let status = match report.status {
            RunStatus::Completed => "completed",
            RunStatus::Canceled => "canceled",
            RunStatus::Failed => "failed",
            RunStatus::Running => "running",
        };
        let seconds = report.elapsed.as_secs_f64();
        let _ = writeln!(
            out,
            "run {} {status} in {seconds:.2}s ({:.1} jobs/s)",
            report.run_id,
            self.total() as f64 / seconds.max(1e-3)
        );
        for (status, count) in &self.by_status {
            let _ = writeln!(out, "  {:<14}{count}", status.as_str());
        }
        let _ = writeln!(
            out,
            "  {:<14}{} ({} retries)",
            "attempts", self.attempts, report.progress.retries
        );
        if !self.durations_ms.is_empty() {
            let mut sorted = self.durations_ms.clone();
            sorted.sort_unstable_by(f64::total_cmp);
            let at =
                |fraction: f64| sorted[((sorted.len() - 1) as f64 * fraction).round() as usize];
            let _ = writeln!(
                out,
                "  {:<14}p50 {:.2} ms, p95 {:.2} ms, max {:.2} ms",
                "duration",
                at(0.5),
                at(0.95),
                at(1.0)
            );
        }
        if !self.by_agent.is_empty() {
            let agents: Vec<String> = self
                .by_agent
                .iter()
                .map(|(agent, jobs)| format!("#{agent}: {jobs}"))
                .collect();
            let _ = writeln!(out, "  {:<14}{}", "jobs/agent", agents.join(", "));
        }
        for problem in &report.agent_problems {
            let _ = writeln!(out, "  {:<14}{problem}", "agent");
        }
        if !self.errors.is_empty() {
            let mut errors: Vec<(&String, &u64)> = self.errors.iter().collect();
            errors.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
            let _ = writeln!(out, "  failures by error:");
            for (error, count) in errors.iter().take(TOP_ERRORS) {
                let _ = writeln!(out, "    {count:>6}  {error}");
            }
            if errors.len() > TOP_ERRORS {
                let _ = writeln!(out, "    ({} other errors)", errors.len() - TOP_ERRORS);
            }
        }
        if !report.dead_letters.is_empty() {
            let undecodable: Vec<&str> = report
                .dead_letters
                .iter()
                .filter(|letter| letter.message.is_none())
                .map(|letter| letter.reason.as_str())
                .collect();
            let _ = writeln!(
                out,
                "  {:<14}{} ({} not job messages)",
                "dead letters",
                report.dead_letters.len(),
                undecodable.len()
            );
            for reason in undecodable.iter().take(TOP_ERRORS) {
                let _ = writeln!(out, "{:16}{reason}", "");
            }
        }
        if let Some(first) = self.evidence.first() {
            let folder = std::path::Path::new(first)
                .parent()
                .map_or_else(|| first.clone(), |parent| parent.display().to_string());
            let _ = writeln!(
                out,
                "  {:<14}{} failed jobs with screenshots, HTML and console logs in {folder}",
                "evidence",
                self.evidence.len()
            );
        }
        if report.events.dropped > 0 {
            let _ = writeln!(
                out,
                "  {:<14}{} monitor events dropped",
                "events", report.events.dropped
            );
        }
        if let Some(results) = results {
            let _ = writeln!(out, "  {:<14}{}", "results", results.display());
        }
        out
    }
}

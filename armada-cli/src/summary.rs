//! The end-of-run summary: counts, attempts, durations, agents and failures by error.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::path::Path;

use armada_core::AgentIndex;
use armada_core::backend::{DeadLetter, RunStatus};
use armada_core::wire::{JobResult, JobStatus};

use armada_orchestrator::RunReport;

/// `count` with the noun that fits it.
fn counted(count: usize, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

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
        // A canceled job did not fail: its "canceled" is no error to group.
        if matches!(result.status, JobStatus::Failed | JobStatus::Abandoned)
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
        self.write_headline(&mut out, report);
        self.write_counts(&mut out, report);
        self.write_durations(&mut out);
        self.write_agents(&mut out, report);
        self.write_failures(&mut out);
        write_dead_letters(&mut out, &report.dead_letters);
        self.write_evidence(&mut out);
        write_dropped_events(&mut out, report.events.dropped);
        write_results_file(&mut out, results);
        out
    }

    fn write_headline(&self, out: &mut String, report: &RunReport) {
        let status = match report.status {
            RunStatus::Completed => "completed",
            RunStatus::Canceled => "canceled",
            RunStatus::Failed => "failed",
            RunStatus::Running => "running",
        };
        let seconds = report.elapsed.as_secs_f64();
        // The rate of jobs that ran: canceled and abandoned ones never did.
        let ran = self.succeeded() + self.failed();
        let _ = writeln!(
            out,
            "run {} {status} in {seconds:.2}s ({:.1} jobs/s)",
            report.run_id,
            ran as f64 / seconds.max(1e-3)
        );
    }

    fn write_counts(&self, out: &mut String, report: &RunReport) {
        for (status, count) in &self.by_status {
            let _ = writeln!(out, "  {:<14}{count}", status.as_str());
        }
        let progress = &report.progress;
        let lost = match progress.redeliveries {
            0 => String::new(),
            1 => ", 1 lost with its agent".to_owned(),
            lost => format!(", {lost} lost with their agents"),
        };
        let _ = writeln!(
            out,
            "  {:<14}{} ({} retries{lost})",
            "attempts", self.attempts, progress.retries
        );
    }

    fn write_durations(&self, out: &mut String) {
        if self.durations_ms.is_empty() {
            return;
        }
        let mut sorted = self.durations_ms.clone();
        sorted.sort_unstable_by(f64::total_cmp);
        let at = |fraction: f64| sorted[((sorted.len() - 1) as f64 * fraction).round() as usize];
        let _ = writeln!(
            out,
            "  {:<14}p50 {:.2} ms, p95 {:.2} ms, max {:.2} ms",
            "duration",
            at(0.5),
            at(0.95),
            at(1.0)
        );
    }

    fn write_agents(&self, out: &mut String, report: &RunReport) {
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
    }

    fn write_failures(&self, out: &mut String) {
        if self.errors.is_empty() {
            return;
        }
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

    fn write_evidence(&self, out: &mut String) {
        let Some(first) = self.evidence.first() else {
            return;
        };
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
}

fn write_dead_letters(out: &mut String, dead_letters: &[DeadLetter]) {
    if dead_letters.is_empty() {
        return;
    }
    let undecodable: Vec<&str> = dead_letters
        .iter()
        .filter(|letter| letter.message.is_none())
        .map(|letter| letter.reason.as_str())
        .collect();
    let jobs = dead_letters.len() - undecodable.len();
    let mut kinds = vec![counted(jobs, "failed job", "failed jobs")];
    if !undecodable.is_empty() {
        kinds.push(counted(
            undecodable.len(),
            "message that is not a job",
            "messages that are not jobs",
        ));
    }
    let _ = writeln!(
        out,
        "  {:<14}{} in the run's dead-letter queue: {}",
        "set aside",
        dead_letters.len(),
        kinds.join(", ")
    );
    for reason in undecodable.iter().take(TOP_ERRORS) {
        let _ = writeln!(out, "{:16}{reason}", "");
    }
}

fn write_dropped_events(out: &mut String, dropped: u64) {
    if dropped > 0 {
        let _ = writeln!(out, "  {:<14}{} monitor events dropped", "events", dropped);
    }
}

fn write_results_file(out: &mut String, results: Option<&Path>) {
    if let Some(results) = results {
        let _ = writeln!(out, "  {:<14}{}", "results", results.display());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use armada_core::backend::{RunProgress, RunStatus};
    use armada_core::wire::{JobResult, JobStatus, WIRE_VERSION};
    use armada_core::{JobId, RunId};

    use super::Summary;
    use armada_orchestrator::RunReport;

    fn result(index: u64, status: JobStatus, error: Option<&str>) -> JobResult {
        JobResult {
            v: WIRE_VERSION,
            index,
            id: JobId::new(),
            status,
            attempts: u32::from(status != JobStatus::Canceled),
            agent: Some(0),
            duration_ms: 10.0,
            output: None,
            error: error.map(str::to_owned),
            evidence: None,
        }
    }

    #[test]
    fn a_canceled_run_counts_what_ran_and_lists_no_cancellation_as_a_failure() {
        let mut summary = Summary::default();
        for index in 0..8 {
            summary.add(&result(index, JobStatus::Succeeded, None));
        }
        summary.add(&result(8, JobStatus::Failed, Some("the page broke")));
        for index in 9..40 {
            summary.add(&result(index, JobStatus::Canceled, Some("canceled")));
        }
        let report = RunReport {
            run_id: RunId::new(),
            status: RunStatus::Canceled,
            progress: RunProgress {
                jobs: 40,
                succeeded: 8,
                failed: 1,
                terminal: 40,
                retries: 0,
                redeliveries: 0,
                status: RunStatus::Canceled,
            },
            elapsed: Duration::from_secs(3),
            agent_problems: Vec::new(),
            dead_letters: Vec::new(),
            events: Default::default(),
        };
        let text = summary.render(&report, None);
        assert!(
            text.contains("in 3.00s (3.0 jobs/s)"),
            "9 jobs ran in 3 s: {text}"
        );
        assert!(text.contains("the page broke"), "{text}");
        assert!(
            !text.contains("31  canceled"),
            "a cancellation is not a failure: {text}"
        );
        assert!(text.contains("  canceled      31"), "{text}");
    }
}

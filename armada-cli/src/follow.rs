//! Following a run on a terminal: the progress display, the results file, Ctrl-C, and the
//! exit code of the run's end.

use std::process::ExitCode;

use armada_core::backend::RunStatus;
use armada_orchestrator::{
    Error as OrchestratorError, FollowEvent, ResultsFile, RunControl, RunHandle, RunReport,
};
use tokio_util::sync::CancellationToken;

use crate::Summary;
use crate::progress::Progress;

/// Follows a run to its end with a progress bar, writing each result to the file once.
/// A file that cannot be written cancels the run through `cancel_on_error` (a launch), or
/// stops following it (an attach), and is returned as the third value.
pub(crate) async fn follow_on_terminal(
    handle: RunHandle,
    results: &mut ResultsFile,
    jobs: u64,
    cancel_on_error: Option<RunControl>,
) -> (
    Result<RunReport, OrchestratorError>,
    Summary,
    Option<OrchestratorError>,
) {
    let mut progress = Progress::new(jobs);
    let mut summary = Summary::default();
    let mut retries = 0;
    let mut write_error = None;
    let stop = CancellationToken::new();
    let failed = |error: OrchestratorError, write_error: &mut Option<OrchestratorError>| {
        if write_error.is_none() {
            *write_error = Some(error);
            match &cancel_on_error {
                Some(control) => control.cancel(),
                None => stop.cancel(),
            }
        }
    };
    let follow = handle.follow(|event| match event {
        FollowEvent::Result(result) => {
            summary.add(result);
            if let Err(error) = results.write(result) {
                failed(error, &mut write_error);
            }
            progress.update(&summary, retries, false);
        }
        FollowEvent::Progress(counters) => {
            retries = counters.retries;
            progress.update(&summary, retries, false);
            // Keep the file current for anyone following it.
            if let Err(error) = results.flush() {
                failed(error, &mut write_error);
            }
        }
    });
    let report = tokio::select! {
        report = follow => report,
        () = stop.cancelled() => Err(OrchestratorError::RunTaskStopped),
    };
    progress.finish();
    (report, summary, write_error)
}

/// First Ctrl-C cancels the run gracefully; a second one stops it now.
pub(crate) async fn cancel_on_ctrl_c(control: RunControl, done: CancellationToken) {
    for press in 0.. {
        tokio::select! {
            () = done.cancelled() => return,
            signal = tokio::signal::ctrl_c() => {
                if signal.is_err() {
                    return;
                }
            }
        }
        if press == 0 {
            eprintln!(
                "\ncanceling: agents finish their current job; press Ctrl-C again to stop now"
            );
            control.cancel();
        } else {
            control.abort();
            return;
        }
    }
}

/// `launch`'s and `attach`'s exit code for a run that ended.
pub(crate) fn exit_code(report: &RunReport, summary: &Summary) -> ExitCode {
    match report.status {
        RunStatus::Canceled => ExitCode::from(130),
        RunStatus::Failed => ExitCode::from(3),
        _ if summary.total() != summary.succeeded() => ExitCode::from(2),
        _ => ExitCode::SUCCESS,
    }
}

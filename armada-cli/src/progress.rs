//! The live view of a run: a progress bar on a terminal, plain lines otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::Summary;

/// How often a plain progress line is printed when stdout is not a terminal.
const LINE_INTERVAL: Duration = Duration::from_secs(2);

/// What the view says until the first job ends: agents are starting (browsers take seconds).
const STARTING: &str = "starting the agents…";

pub(crate) enum Progress {
    Bar(ProgressBar),
    Lines {
        started: Instant,
        last: Instant,
        /// Jobs done and retries of the last line printed: an unchanged line is not printed
        /// again.
        shown: (u64, u64),
    },
}

impl Progress {
    pub(crate) fn new(jobs: u64) -> Self {
        if !std::io::stdout().is_terminal() {
            println!("progress: {STARTING}");
            let now = Instant::now();
            return Self::Lines {
                started: now,
                last: now,
                shown: (0, 0),
            };
        }
        let bar = ProgressBar::with_draw_target(Some(jobs), ProgressDrawTarget::stdout());
        let style = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} ETA {eta}  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(STARTING);
        bar.enable_steady_tick(Duration::from_millis(200));
        Self::Bar(bar)
    }

    pub(crate) fn update(&mut self, summary: &Summary, retries: u64, force_line: bool) {
        let message = format!(
            "ok {}  failed {}  retries {retries}",
            summary.succeeded(),
            summary.failed()
        );
        match self {
            Self::Bar(_) if summary.total() == 0 && retries == 0 => {}
            Self::Bar(bar) => {
                let rate = summary.total() as f64 / bar.elapsed().as_secs_f64().max(1e-3);
                bar.set_position(summary.total());
                bar.set_message(format!("{message}  {rate:.1} jobs/s"));
            }
            Self::Lines {
                started,
                last,
                shown,
            } => {
                let now = (summary.total(), retries);
                if !force_line && (last.elapsed() < LINE_INTERVAL || *shown == now) {
                    return;
                }
                (*last, *shown) = (Instant::now(), now);
                let elapsed = started.elapsed().as_secs_f64().max(1e-3);
                println!(
                    "progress: {} jobs done  {message}  {:.1} jobs/s",
                    summary.total(),
                    summary.total() as f64 / elapsed
                );
            }
        }
    }

    pub(crate) fn finish(&self) {
        if let Self::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

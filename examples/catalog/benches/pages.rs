//! `cargo xtask bench`: browser jobs over the catalog shop, Armada next to a plain
//! chromiumoxide loop over the same pages with the same number of browsers, in this process.
//! Each job opens a fresh tab, closes the last job's, loads a product (distinct pages of a
//! 10,000-page shop), waits for its JavaScript-rendered stock and reads four fields. Both
//! include starting their browsers. Memory is the peak proportional set size of all Chromium
//! processes of the phase, per browser. Then one agent runs 2,000 jobs and its browser's
//! memory is sampled every 100 jobs: a leak shows as a slope.
//!
//! A line is three rounds, each the plain loop and Armada over pages not visited before, in
//! alternating order; its ratio is the median of the rounds' ratios, so that a burst of load
//! on a shared machine spoils one round rather than the line.
//!
//! Sizes: 40 pages per round by default, which keeps `cargo xtask bench` under ten minutes on
//! 2 cores (a page costs about 170 ms of one browser there, mostly the new tab's renderer);
//! `ARMADA_BENCH_FULL=1` runs 170 pages per round (510 per line).
//!
//! The shop renders the stock with no delay here (`site::router_with_stock_delay(0)`), so that
//! a page costs the browser's work, not a timer that would hide Armada's overhead.

#![allow(clippy::unwrap_used)]

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

// The root benches' helpers (row selection, target lines), shared rather than copied.
#[path = "../../../benches/support/mod.rs"]
mod support;

use armada::{
    Backends, FollowEvent, Launcher, Orchestrator, Plan, ProjectFiles, RunOverrides, ScriptAgent,
};
use catalog::{Catalog, site};
use chromiumoxide::{Browser, BrowserConfig};
use futures::StreamExt;
use support::{median, target, wanted};

/// How often the growth run's browser is sampled, in jobs.
const GROWTH_EVERY: u64 = 100;

/// Rounds of a line, each the plain loop and Armada.
const ROUNDS: u64 = 3;

/// Pages per round (each page of a line visited once) and jobs of the memory-growth run on one
/// agent: 40 pages per round by default, 170 with `ARMADA_BENCH_FULL=1`.
fn sizes() -> (u64, u64) {
    if std::env::var_os("ARMADA_BENCH_FULL").is_some_and(|value| value == "1") {
        (170, 2_000)
    } else {
        (40, 2_000)
    }
}

fn product_id(job: u64) -> u64 {
    job % u64::from(site::CATALOG) + 1
}

fn product_url(base: &str, job: u64) -> String {
    format!("{base}/product/{}", product_id(job))
}

/// Proportional set size (shared pages split between their users) in kilobytes of all
/// Chromium processes whose command line mentions `marker`.
fn chromium_kb(marker: &str) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut total = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(cmdline) = std::fs::read(path.join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if !cmdline.contains("chromium") || !cmdline.contains(marker) {
            continue;
        }
        if let Ok(rollup) = std::fs::read_to_string(path.join("smaps_rollup")) {
            total += rollup
                .lines()
                .find_map(|line| line.strip_prefix("Pss:"))
                .and_then(|value| value.split_whitespace().next())
                .and_then(|kb| kb.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

/// Samples [`chromium_kb`] until stopped; returns the peak.
fn sample_peak(marker: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            peak = peak.max(chromium_kb(&marker));
            // Reading every process's smaps costs the kernel a page-table walk (about 20 ms
            // a round): sampled more often, it would take a core's share from the browsers.
            std::thread::sleep(Duration::from_millis(250));
        }
        peak
    })
}

struct Measure {
    elapsed: Duration,
    peak_mb_per_browser: f64,
    /// (jobs done, MB of the agents' browsers) every [`GROWTH_EVERY`] jobs.
    samples: Vec<(u64, f64)>,
}

async fn armada(base: &str, agents: u32, pages: Range<u64>) -> Measure {
    let jobs = pages.end - pages.start;
    let template = serde_json::json!({
        "run_message": { "agents": agents, "jobs": jobs, "max_attempts": 1 },
        "default_agent_message": { "site_url": base },
    });
    let rows: String = pages
        .enumerate()
        .map(|(job, page)| format!("{job},product,{}\n", product_id(page)))
        .collect();
    let files = ProjectFiles::from_template(template.to_string())
        .with_job_csv(format!("targetted_job,kind,id\n{rows}"));
    let plan = Plan::for_script::<Catalog>(&files, &RunOverrides::default()).unwrap();
    let orchestrator = Orchestrator::new(
        Backends::embedded().await.unwrap(),
        Launcher::InProcess(Arc::new(ScriptAgent::new(Catalog))),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let handle = orchestrator.launch(&plan).await.unwrap();
    let marker = format!("armada/{}/", handle.run_id());
    let sampler = sample_peak(marker.clone(), Arc::clone(&stop));
    let (mut done, mut samples) = (0, Vec::new());
    let report = handle
        .follow(|event| {
            if let FollowEvent::Result(_) = event {
                done += 1;
                // Not at the last job: the run is ending and the browser may be closing.
                if done % GROWTH_EVERY == 0 && done < jobs {
                    samples.push((done, chromium_kb(&marker) as f64 / 1024.0));
                }
            }
        })
        .await
        .unwrap();
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap_or(0);
    assert_eq!(report.progress.succeeded, jobs, "every page must be read");
    Measure {
        elapsed,
        peak_mb_per_browser: peak as f64 / 1024.0 / f64::from(agents),
        samples,
    }
}

/// The least-squares slope of (jobs, MB), in MB per 1,000 jobs.
fn slope_per_thousand(samples: &[(u64, f64)]) -> f64 {
    let n = samples.len() as f64;
    let mean_x = samples.iter().map(|&(x, _)| x as f64).sum::<f64>() / n;
    let mean_y = samples.iter().map(|&(_, y)| y).sum::<f64>() / n;
    let (mut covariance, mut variance) = (0.0, 0.0);
    for &(x, y) in samples {
        covariance += (x as f64 - mean_x) * (y - mean_y);
        variance += (x as f64 - mean_x).powi(2);
    }
    covariance / variance * 1000.0
}

async fn plain(base: &str, browsers: u32, pages: Range<u64>) -> Measure {
    let executable = ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
        .expect("Chromium at /usr/lib/chromium/chromium (cargo xtask bench installs it)");
    let marker = format!("armada-bench-plain-{}", std::process::id());
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_peak(marker.clone(), Arc::clone(&stop));
    let (next, end) = (Arc::new(AtomicU64::new(pages.start)), pages.end);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..browsers {
        let profile = std::env::temp_dir().join(format!("{marker}/{index}"));
        let config = BrowserConfig::builder()
            .chrome_executable(executable)
            .user_data_dir(&profile)
            .no_sandbox()
            .args([
                "disable-gpu",
                "disable-quic",
                "no-first-run",
                "disable-background-networking",
                "disable-component-update",
                "disable-sync",
                "disable-dev-shm-usage",
            ])
            .build()
            .expect("a browser config");
        let (mut browser, mut handler) = Browser::launch(config).await.expect("Chromium starts");
        let driver = tokio::spawn(async move { while handler.next().await.is_some() {} });
        let (next, base) = (Arc::clone(&next), base.to_owned());
        tasks.spawn(async move {
            let mut previous: Option<chromiumoxide::Page> = None;
            loop {
                let job = next.fetch_add(1, Ordering::Relaxed);
                if job >= end {
                    break;
                }
                // As Armada does: the next tab opens before the last one closes.
                let page = browser.new_page("about:blank").await.expect("a page");
                if let Some(previous) = previous.take() {
                    previous.close().await.expect("close");
                }
                page.goto(product_url(&base, job))
                    .await
                    .expect("the page loads");
                loop {
                    let stock: String = page
                        .evaluate("document.getElementById('stock').textContent")
                        .await
                        .expect("evaluate")
                        .into_value()
                        .expect("text");
                    if stock != "loading" {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                for selector in ["#name", "#price", "#sku"] {
                    let expression = format!("document.querySelector('{selector}').textContent");
                    let _: String = page
                        .evaluate(expression)
                        .await
                        .expect("evaluate")
                        .into_value()
                        .expect("text");
                }
                previous = Some(page);
            }
            if let Some(previous) = previous {
                previous.close().await.expect("close");
            }
            let _ = browser.close().await;
            let _ = browser.wait().await;
            driver.abort();
            let _ = std::fs::remove_dir_all(profile);
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap_or(0);
    let _ = std::fs::remove_dir_all(std::env::temp_dir().join(&marker));
    Measure {
        elapsed,
        peak_mb_per_browser: peak as f64 / 1024.0 / f64::from(browsers),
        samples: Vec::new(),
    }
}

fn main() {
    let (pages, growth_jobs) = sizes();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let base = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shop = site::router_with_stock_delay(0);
        tokio::spawn(async move { axum::serve(listener, shop).await });
        format!("http://{address}")
    });
    println!(
        "{ROUNDS} rounds per line of {pages} product pages each, every page of a line distinct \
         (a shop of {} pages); a new tab per page (opened before the last one closes), \
         browsers started included; in each round the plain loop and Armada (embedded \
         backends, agents as tasks), in alternating order. Rates are the rounds' medians, the \
         ratio the median of the rounds' ratios, memory the highest peak of the rounds. \
         `ARMADA_BENCH_FULL=1` runs 170 pages per round.\n",
        site::CATALOG
    );
    println!(
        "| agents | armada pages/s | plain chromiumoxide pages/s | armada / plain | overhead ms/page | peak PSS MB per browser, armada | plain | armada / plain memory |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    // The worst ratio of each kind, with its number of agents.
    let mut slowest: Option<(u32, f64)> = None;
    let mut heaviest: Option<(u32, f64)> = None;
    for agents in [1, 2, 4] {
        if !wanted(&agents.to_string()) {
            continue;
        }
        let began = Instant::now();
        let rate = |measure: &Measure| pages as f64 / measure.elapsed.as_secs_f64();
        let (mut armada_rates, mut plain_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        let (mut armada_peak, mut plain_peak) = (0.0_f64, 0.0_f64);
        for round in 0..ROUNDS {
            let line = (round * pages)..((round + 1) * pages);
            let (plain, armada) = if round % 2 == 0 {
                let plain = runtime.block_on(plain(&base, agents, line.clone()));
                (plain, runtime.block_on(armada(&base, agents, line)))
            } else {
                let armada = runtime.block_on(armada(&base, agents, line.clone()));
                (runtime.block_on(plain(&base, agents, line)), armada)
            };
            ratios.push(rate(&armada) / rate(&plain));
            armada_rates.push(rate(&armada));
            plain_rates.push(rate(&plain));
            armada_peak = armada_peak.max(armada.peak_mb_per_browser);
            plain_peak = plain_peak.max(plain.peak_mb_per_browser);
        }
        let (armada_rate, plain_rate) = (median(armada_rates), median(plain_rates));
        let (speed, memory) = (median(ratios), armada_peak / plain_peak);
        let per_page = |rate: f64| 1000.0 * f64::from(agents) / rate;
        println!(
            "| {agents} | {armada_rate:.1} | {plain_rate:.1} | {speed:.3} | {:.1} | {armada_peak:.0} | {plain_peak:.0} | {memory:.2} |",
            per_page(armada_rate) - per_page(plain_rate),
        );
        if slowest.is_none_or(|(_, worst)| speed < worst) {
            slowest = Some((agents, speed));
        }
        if heaviest.is_none_or(|(_, worst)| memory > worst) {
            heaviest = Some((agents, memory));
        }
        eprintln!("pages {agents}: {:.1} s", began.elapsed().as_secs_f64());
    }
    println!(
        "\nOverhead per page is per browser, from the median rates: browsers / armada pages/s − \
         browsers / plain pages/s.\n"
    );
    if wanted("growth") {
        let began = Instant::now();
        let growth = runtime.block_on(armada(&base, 1, 0..growth_jobs));
        let samples = &growth.samples;
        let (first, last) = (samples[0], samples[samples.len() - 1]);
        let slope = slope_per_thousand(samples);
        println!(
            "Memory over {growth_jobs} jobs (distinct pages) on one agent (key `growth`): its \
             browser's PSS every {GROWTH_EVERY} jobs.\n"
        );
        println!(
            "| key | pages/s | MB after {} jobs | MB after {} jobs | slope MB per 1,000 jobs | peak MB |",
            first.0, last.0
        );
        println!("|---|---:|---:|---:|---:|---:|");
        println!(
            "| growth | {:.1} | {:.0} | {:.0} | {slope:+.1} | {:.0} |",
            growth_jobs as f64 / growth.elapsed.as_secs_f64(),
            first.1,
            last.1,
            growth.peak_mb_per_browser,
        );
        let series: Vec<String> = samples
            .iter()
            .map(|(jobs, mb)| format!("{jobs}: {mb:.0}"))
            .collect();
        println!("\nSamples (jobs: MB): {}.\n", series.join(", "));
        eprintln!("pages growth: {:.1} s", began.elapsed().as_secs_f64());
    }
    if let Some((agents, speed)) = slowest {
        target(
            "browser jobs within 5% of the plain chromiumoxide loop's pages/s",
            speed >= 0.95,
            &format!("lowest ratio {speed:.3}, with {agents} agents"),
        );
    }
    if let Some((agents, memory)) = heaviest {
        target(
            "memory per agent within 10% of the plain loop's browser",
            memory <= 1.10,
            &format!("highest ratio {memory:.2}, with {agents} agents"),
        );
    }
}

//! `cargo xtask bench`: browser jobs over the catalog shop, Armada next to a plain
//! chromiumoxide loop over the same pages with the same number of browsers, in this process.
//! Each job opens a fresh page, loads a product, waits for its JavaScript-rendered stock,
//! reads four fields and closes the page. Both include starting their browsers. Memory is the
//! peak proportional set size of all Chromium processes of the phase, per browser.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use armada::{Backends, Launcher, Orchestrator, Plan, ProjectFiles, RunOverrides, ScriptAgent};
use catalog::{Catalog, site};
use chromiumoxide::{Browser, BrowserConfig};
use futures::StreamExt;

const JOBS: u64 = 120;

fn product_url(base: &str, job: u64) -> String {
    format!("{base}/product/{}", job % u64::from(site::PRODUCTS) + 1)
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
            std::thread::sleep(Duration::from_millis(100));
        }
        peak
    })
}

struct Measure {
    elapsed: Duration,
    peak_mb_per_browser: f64,
}

async fn armada(base: &str, agents: u32) -> Measure {
    let template = serde_json::json!({
        "run_message": { "agents": agents, "jobs": JOBS, "max_attempts": 1 },
        "default_agent_message": { "site_url": base },
    });
    let mut files = ProjectFiles::from_template(template.to_string());
    let rows: String = (0..JOBS)
        .map(|job| format!("{job},product,{}\n", job % u64::from(site::PRODUCTS) + 1))
        .collect();
    files.job_csv = Some(armada::NamedFile::new(
        "data_job.csv",
        format!("targetted_job,kind,id\n{rows}"),
    ));
    let plan = Plan::for_script::<Catalog>(&files, &RunOverrides::default()).expect("a valid plan");
    let orchestrator = Orchestrator::new(
        Backends::embedded().await.expect("embedded backends"),
        Launcher::InProcess(Arc::new(ScriptAgent::new(Catalog))),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let handle = orchestrator.launch(&plan).await.expect("launch");
    let sampler = sample_peak(format!("armada/{}/", handle.run_id()), Arc::clone(&stop));
    let report = handle.follow(|_| {}).await.expect("run");
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap_or(0);
    assert_eq!(report.progress.succeeded, JOBS, "every page must be read");
    Measure {
        elapsed,
        peak_mb_per_browser: peak as f64 / 1024.0 / f64::from(agents),
    }
}

async fn plain(base: &str, browsers: u32) -> Measure {
    let executable = ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
        .expect("Chromium (cargo xtask bench installs it)");
    let marker = format!("armada-bench-plain-{}", std::process::id());
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_peak(marker.clone(), Arc::clone(&stop));
    let next = Arc::new(AtomicU64::new(0));
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
            loop {
                let job = next.fetch_add(1, Ordering::Relaxed);
                if job >= JOBS {
                    break;
                }
                let page = browser.new_page("about:blank").await.expect("a page");
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
                page.close().await.expect("close");
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
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let base = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let address = listener.local_addr().expect("an address");
        tokio::spawn(async move { axum::serve(listener, site::router()).await });
        format!("http://{address}")
    });
    println!(
        "## Browser jobs over the catalog shop ({JOBS} product pages, browsers started included)\n"
    );
    println!(
        "| agents | armada pages/s | plain chromiumoxide pages/s | armada / plain | overhead ms/page | peak PSS MB per browser, armada | plain |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for agents in [1, 4] {
        let plain = runtime.block_on(plain(&base, agents));
        let armada = runtime.block_on(armada(&base, agents));
        let rate = |measure: &Measure| JOBS as f64 / measure.elapsed.as_secs_f64();
        let per_page = |measure: &Measure| {
            measure.elapsed.as_secs_f64() * 1000.0 * f64::from(agents) / JOBS as f64
        };
        println!(
            "| {agents} | {:.1} | {:.1} | {:.3} | {:.1} | {:.0} | {:.0} |",
            rate(&armada),
            rate(&plain),
            rate(&armada) / rate(&plain),
            per_page(&armada) - per_page(&plain),
            armada.peak_mb_per_browser,
            plain.peak_mb_per_browser,
        );
    }
}

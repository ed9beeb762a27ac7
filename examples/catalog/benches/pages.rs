//! `cargo xtask bench`: browser jobs, Armada next to a plain chromiumoxide loop doing the same
//! work with the same number of browsers, in this process, on two sites served here:
//!
//! - `shop`: the catalog example's product pages (distinct pages of a 10,000-page shop). A job
//!   loads one, waits for its JavaScript-rendered stock and reads four fields; Armada runs the
//!   example's own script.
//! - `docs`: a generated static documentation site ([`docs_site`]: 600 long pages with a
//!   stylesheet, two scripts and figures). A job loads one page and reads its title and first
//!   heading.
//!
//! Every value read is checked against the site, in both loops. Two ways to use tabs:
//!
//! - **reused**: the plain loop opens one page per browser and navigates it from page to page,
//!   the fastest loop a person writes by hand; Armada runs with its default
//!   `browser.pages: reuse`.
//! - **tab per page**: the plain loop opens a new tab per page (before closing the last);
//!   Armada runs with `browser.pages: new_per_job`.
//!
//! Both include starting their browsers. CPU is the whole process tree's (this process and
//! every Chromium process), read from a cgroup the bench moves itself into, so a renderer that
//! exits is still counted. Memory is the peak proportional set size of the phase's Chromium
//! processes, per browser. Then one agent reads 2,000 documentation pages on a reused page and
//! its browser's memory is sampled every 100 jobs.
//!
//! A line is three rounds, each with the four loops in alternating order over pages not visited
//! before; rates and CPU are the rounds' medians, ratios the medians of the rounds' ratios.
//! Sizes: 60 pages per round by default; `ARMADA_BENCH_FULL=1` runs 170.

#![allow(clippy::unwrap_used)]

// Not a bench of its own: cargo takes every `benches/*.rs` for one.
#[path = "pages/docs_site.rs"]
mod docs_site;

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

// The root benches' helpers (row selection, target lines), shared rather than copied.
#[path = "../../../benches/support/mod.rs"]
mod support;

use armada::browser::{BrowserAgent, BrowserJob};
use armada::prelude::*;
use armada::{
    Backends, FollowEvent, Launcher, Orchestrator, Plan, ProjectFiles, RunOverrides, ScriptAgent,
};
use catalog::{Catalog, site};
use chromiumoxide::{Browser, BrowserConfig, Page};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use support::{cpu_seconds, median, target, wanted};

/// How often the growth run's browser is sampled, in jobs.
const GROWTH_EVERY: u64 = 100;

/// The growth run's browser recycling: a new browser after this many jobs.
const RECYCLE_AFTER_JOBS: u32 = 500;

/// Rounds of a line, each with every loop.
const ROUNDS: u64 = 3;

/// Pages per round and jobs of the memory-growth run on one agent.
fn sizes() -> (u64, u64) {
    if std::env::var_os("ARMADA_BENCH_FULL").is_some_and(|value| value == "1") {
        (170, 2_000)
    } else {
        (60, 2_000)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Site {
    Shop,
    Docs,
}

impl Site {
    fn key(self) -> &'static str {
        match self {
            Self::Shop => "shop",
            Self::Docs => "docs",
        }
    }

    /// The site's page for the bench's page number `page` (from 0).
    fn number(self, page: u64) -> u64 {
        match self {
            Self::Shop => page % u64::from(site::CATALOG) + 1,
            Self::Docs => page % docs_site::PAGES + 1,
        }
    }

    fn url(self, base: &str, page: u64) -> String {
        match self {
            Self::Shop => format!("{base}/product/{}", self.number(page)),
            Self::Docs => format!("{base}/docs/{}.html", self.number(page)),
        }
    }

    /// What a job must read on the bench's page `page`, as Armada's scripts return it.
    fn expected(self, page: u64) -> Value {
        let number = self.number(page);
        match self {
            Self::Shop => {
                let id = u32::try_from(number).unwrap();
                json!({
                    "name": site::name(id),
                    "price": site::price(id),
                    "sku": format!("SKU-{id:04}"),
                    "stock": format!("in stock: {}", site::stock(id)),
                })
            }
            Self::Docs => json!([docs_site::title(number), docs_site::heading(number)]),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tabs {
    Reused,
    PerPage,
}

impl Tabs {
    fn label(self) -> &'static str {
        match self {
            Self::Reused => "reused",
            Self::PerPage => "tab per page",
        }
    }

    fn armada_setting(self) -> &'static str {
        match self {
            Self::Reused => "reuse",
            Self::PerPage => "new_per_job",
        }
    }
}

/// A documentation page to read.
#[derive(Debug, Deserialize)]
struct DocsPage {
    url: String,
}

/// Reads a documentation page's title and first heading.
struct DocsReader;

/// The one expression both loops evaluate on a documentation page.
const DOCS_EXPRESSION: &str = "[document.title, document.querySelector('h1').textContent]";

impl Script for DocsReader {
    type Agent = BrowserAgent;
    type Job = BrowserJob<DocsPage>;
    type Output = Value;

    async fn run(&self, _: &mut BrowserAgent, job: &mut Self::Job) -> Result<Value, ScriptError> {
        job.goto(&job.payload.url).await?;
        job.evaluate(DOCS_EXPRESSION).await
    }
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
            std::thread::sleep(Duration::from_millis(400));
        }
        peak
    })
}

/// CPU time of this process and of every process it starts (Chromium's whole tree), from a
/// cgroup the bench moves itself into: unlike sampling /proc, it counts renderers that exit
/// between two samples. Moves the process back and removes the cgroup when dropped.
struct CpuMeter {
    folder: PathBuf,
    usage: PathBuf,
    /// cgroup v1's `cpuacct.usage` counts nanoseconds; v2's `cpu.stat` microseconds.
    v1: bool,
    home: PathBuf,
}

impl CpuMeter {
    fn new() -> Result<Self, String> {
        let membership = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
        let path_of = |controller: &str| {
            membership.lines().find_map(|line| {
                let mut fields = line.splitn(3, ':');
                let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
                controllers
                    .split(',')
                    .any(|c| c == controller)
                    .then(|| path.to_owned())
            })
        };
        let (root, path, v1) = match path_of("cpuacct") {
            Some(path) => ("/sys/fs/cgroup/cpuacct".to_owned(), path, true),
            None => {
                let path = membership
                    .lines()
                    .find_map(|line| line.strip_prefix("0::"))
                    .ok_or("no cgroup v1 cpuacct or v2 hierarchy")?;
                ("/sys/fs/cgroup".to_owned(), path.to_owned(), false)
            }
        };
        let home = PathBuf::from(format!("{root}{path}"));
        let folder = PathBuf::from(root).join(format!("armada-bench-{}", std::process::id()));
        std::fs::create_dir_all(&folder).map_err(|e| format!("{}: {e}", folder.display()))?;
        std::fs::write(folder.join("cgroup.procs"), std::process::id().to_string())
            .map_err(|e| format!("move into {}: {e}", folder.display()))?;
        let usage = folder.join(if v1 { "cpuacct.usage" } else { "cpu.stat" });
        Ok(Self {
            folder,
            usage,
            v1,
            home,
        })
    }

    fn seconds(&self) -> f64 {
        let text = std::fs::read_to_string(&self.usage).unwrap_or_default();
        if self.v1 {
            text.trim().parse::<f64>().unwrap_or(f64::NAN) / 1e9
        } else {
            text.lines()
                .find_map(|line| line.strip_prefix("usage_usec "))
                .and_then(|value| value.trim().parse::<f64>().ok())
                .unwrap_or(f64::NAN)
                / 1e6
        }
    }
}

impl Drop for CpuMeter {
    fn drop(&mut self) {
        let _ = std::fs::write(
            self.home.join("cgroup.procs"),
            std::process::id().to_string(),
        );
        let _ = std::fs::remove_dir(&self.folder);
    }
}

struct Measure {
    elapsed: Duration,
    /// The whole process tree's.
    cpu_seconds: f64,
    /// This process's own: Armada (or the plain loop's driver), chromiumoxide and the sites.
    own_cpu_seconds: f64,
    peak_mb_per_browser: f64,
    /// (jobs done, MB of the agents' browsers) every [`GROWTH_EVERY`] jobs.
    samples: Vec<(u64, f64)>,
}

/// Where the two sites are served.
struct Bases {
    shop: String,
    docs: String,
}

impl Bases {
    fn of(&self, site: Site) -> &str {
        match site {
            Site::Shop => &self.shop,
            Site::Docs => &self.docs,
        }
    }
}

/// The agents' `browser` settings for a loop with `tabs`.
fn browser_settings(tabs: Tabs) -> Value {
    json!({ "pages": tabs.armada_setting() })
}

fn armada_plan(site: Site, base: &str, agents: u32, pages: &Range<u64>, browser: Value) -> Plan {
    let jobs = pages.end - pages.start;
    let (agent, header, rows): (Value, &str, String) = match site {
        Site::Shop => (
            json!({ "site_url": base, "browser": browser }),
            "targetted_job,kind,id",
            pages
                .clone()
                .enumerate()
                .map(|(job, page)| format!("{job},product,{}\n", site.number(page)))
                .collect(),
        ),
        Site::Docs => (
            json!({ "browser": browser }),
            "targetted_job,url",
            pages
                .clone()
                .enumerate()
                .map(|(job, page)| format!("{job},{}\n", site.url(base, page)))
                .collect(),
        ),
    };
    let template = json!({
        "run_message": { "agents": agents, "jobs": jobs, "max_attempts": 1 },
        "default_agent_message": agent,
    });
    let files =
        ProjectFiles::from_template(template.to_string()).with_job_csv(format!("{header}\n{rows}"));
    match site {
        Site::Shop => Plan::for_script::<Catalog>(&files, &RunOverrides::default()),
        Site::Docs => Plan::for_script::<DocsReader>(&files, &RunOverrides::default()),
    }
    .unwrap()
}

async fn armada(
    site: Site,
    bases: &Bases,
    agents: u32,
    pages: Range<u64>,
    browser: Value,
    meter: &CpuMeter,
) -> Measure {
    let jobs = pages.end - pages.start;
    let plan = armada_plan(site, bases.of(site), agents, &pages, browser);
    let runner: Arc<dyn armada::AgentRunner> = match site {
        Site::Shop => Arc::new(ScriptAgent::new(Catalog)),
        Site::Docs => Arc::new(ScriptAgent::new(DocsReader)),
    };
    let orchestrator = Orchestrator::new(
        Backends::embedded().await.unwrap(),
        Launcher::InProcess(runner),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (start, cpu_start, own_start) = (Instant::now(), meter.seconds(), cpu_seconds());
    let handle = orchestrator.launch(&plan).await.unwrap();
    let marker = format!("armada/{}/", handle.run_id());
    let sampler = sample_peak(marker.clone(), Arc::clone(&stop));
    let (mut done, mut samples) = (0, Vec::new());
    let report = handle
        .follow(|event| {
            let FollowEvent::Result(result) = event else {
                return;
            };
            let expected = site.expected(pages.start + result.index);
            assert_eq!(
                result.output.as_ref(),
                Some(&expected),
                "{site:?} job {}: {result:?}",
                result.index
            );
            done += 1;
            // Halfway between hundreds: never as a recycled browser starts (after a multiple
            // of `RECYCLE_AFTER_JOBS`), nor at the last job, when the browser may be closing.
            if done % GROWTH_EVERY == GROWTH_EVERY / 2 && done < jobs {
                samples.push((done, chromium_kb(&marker) as f64 / 1024.0));
            }
        })
        .await
        .unwrap();
    let (elapsed, cpu_seconds) = (start.elapsed(), meter.seconds() - cpu_start);
    let own_cpu_seconds = support::cpu_seconds() - own_start;
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap_or(0);
    assert_eq!(report.progress.succeeded, jobs, "every page must be read");
    Measure {
        elapsed,
        cpu_seconds,
        own_cpu_seconds,
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

/// Evaluates `expression` on `page` and returns its value.
async fn evaluate(page: &Page, expression: &str) -> Value {
    page.evaluate(expression)
        .await
        .expect("evaluate")
        .into_value()
        .expect("a JSON value")
}

/// What the plain loop reads on `page`, as Armada's scripts return it: the shop's four fields
/// the way the catalog script reads them (wait for the stock, then one evaluation per field),
/// or the documentation page's title and heading in one evaluation.
async fn read_by_hand(site: Site, page: &Page) -> Value {
    match site {
        Site::Shop => {
            let stock = loop {
                let stock = evaluate(page, "document.getElementById('stock').textContent").await;
                if stock != "loading" {
                    break stock;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let mut fields = serde_json::Map::new();
            for field in ["name", "price", "sku"] {
                let expression = format!("document.querySelector('#{field}').textContent");
                fields.insert(field.to_owned(), evaluate(page, &expression).await);
            }
            fields.insert("stock".to_owned(), stock);
            Value::Object(fields)
        }
        Site::Docs => evaluate(page, DOCS_EXPRESSION).await,
    }
}

async fn plain(
    site: Site,
    bases: &Bases,
    browsers: u32,
    pages: Range<u64>,
    tabs: Tabs,
    meter: &CpuMeter,
) -> Measure {
    let executable = ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
        .expect("Chromium at /usr/lib/chromium/chromium (cargo xtask bench installs it)");
    let marker = format!("armada-bench-plain-{}", std::process::id());
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_peak(marker.clone(), Arc::clone(&stop));
    let (next, end) = (Arc::new(AtomicU64::new(pages.start)), pages.end);
    let (start, cpu_start, own_start) = (Instant::now(), meter.seconds(), cpu_seconds());
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
        let (next, base) = (Arc::clone(&next), bases.of(site).to_owned());
        tasks.spawn(async move {
            let mut current = browser.new_page("about:blank").await.expect("a page");
            loop {
                let page = next.fetch_add(1, Ordering::Relaxed);
                if page >= end {
                    break;
                }
                if tabs == Tabs::PerPage {
                    let fresh = browser.new_page("about:blank").await.expect("a page");
                    std::mem::replace(&mut current, fresh)
                        .close()
                        .await
                        .expect("close");
                }
                current
                    .goto(site.url(&base, page))
                    .await
                    .expect("the page loads");
                let read = read_by_hand(site, &current).await;
                assert_eq!(read, site.expected(page), "{site:?} page {page}, by hand");
            }
            current.close().await.expect("close");
            let _ = browser.close().await;
            let _ = browser.wait().await;
            driver.abort();
            let _ = std::fs::remove_dir_all(profile);
        });
    }
    while tasks.join_next().await.is_some() {}
    let (elapsed, cpu_seconds) = (start.elapsed(), meter.seconds() - cpu_start);
    let own_cpu_seconds = support::cpu_seconds() - own_start;
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap_or(0);
    let _ = std::fs::remove_dir_all(std::env::temp_dir().join(&marker));
    Measure {
        elapsed,
        cpu_seconds,
        own_cpu_seconds,
        peak_mb_per_browser: peak as f64 / 1024.0 / f64::from(browsers),
        samples: Vec::new(),
    }
}

/// One row of a line: Armada against the plain loop with the same tabs.
#[derive(Default)]
struct Comparison {
    armada_rates: Vec<f64>,
    plain_rates: Vec<f64>,
    speed_ratios: Vec<f64>,
    armada_cpu: Vec<f64>,
    plain_cpu: Vec<f64>,
    cpu_ratios: Vec<f64>,
    /// This process's CPU per page, Armada's and the plain loop's.
    armada_own: Vec<f64>,
    plain_own: Vec<f64>,
    armada_peak: f64,
    plain_peak: f64,
}

impl Comparison {
    fn add(&mut self, pages: u64, armada: &Measure, plain: &Measure) {
        let rate = |measure: &Measure| pages as f64 / measure.elapsed.as_secs_f64();
        let cpu = |measure: &Measure| measure.cpu_seconds / pages as f64;
        self.armada_rates.push(rate(armada));
        self.plain_rates.push(rate(plain));
        self.speed_ratios.push(rate(armada) / rate(plain));
        self.armada_cpu.push(cpu(armada));
        self.plain_cpu.push(cpu(plain));
        self.cpu_ratios.push(cpu(armada) / cpu(plain));
        self.armada_own.push(armada.own_cpu_seconds / pages as f64);
        self.plain_own.push(plain.own_cpu_seconds / pages as f64);
        self.armada_peak = self.armada_peak.max(armada.peak_mb_per_browser);
        self.plain_peak = self.plain_peak.max(plain.peak_mb_per_browser);
    }

    fn speed(&self) -> f64 {
        median(self.speed_ratios.clone())
    }

    fn cpu(&self) -> f64 {
        median(self.cpu_ratios.clone())
    }

    fn memory(&self) -> f64 {
        self.armada_peak / self.plain_peak
    }

    /// A row of the CPU split: this process's milliseconds per page and the rest (Chromium).
    fn split(&self, key: &str, tabs: Tabs) -> String {
        let ms = |values: &[f64]| median(values.to_vec()) * 1000.0;
        let (armada_all, plain_all) = (ms(&self.armada_cpu), ms(&self.plain_cpu));
        let (armada_own, plain_own) = (ms(&self.armada_own), ms(&self.plain_own));
        format!(
            "| {key} | {} | {armada_own:.1} | {:.1} | {plain_own:.1} | {:.1} |",
            tabs.label(),
            armada_all - armada_own,
            plain_all - plain_own,
        )
    }

    fn print(&self, key: &str, site: Site, agents: u32, tabs: Tabs) {
        println!(
            "| {key} | {} | {agents} | {} | {:.1} | {:.1} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0} | {:.0} | {:.2} |",
            site.key(),
            tabs.label(),
            median(self.armada_rates.clone()),
            median(self.plain_rates.clone()),
            self.speed(),
            median(self.armada_cpu.clone()),
            median(self.plain_cpu.clone()),
            self.cpu(),
            self.armada_peak,
            self.plain_peak,
            self.memory(),
        );
    }
}

/// The worst figure of a kind across lines, with the line's key.
#[derive(Default)]
struct Worst {
    lowest: Option<(String, f64)>,
    highest: Option<(String, f64)>,
}

impl Worst {
    fn low(&mut self, key: &str, value: f64) {
        if self.lowest.as_ref().is_none_or(|(_, worst)| value < *worst) {
            self.lowest = Some((key.to_owned(), value));
        }
    }

    fn high(&mut self, key: &str, value: f64) {
        if self
            .highest
            .as_ref()
            .is_none_or(|(_, worst)| value > *worst)
        {
            self.highest = Some((key.to_owned(), value));
        }
    }
}

/// Runs a line's rounds: every loop over pages of its own, in alternating order.
fn line(
    runtime: &tokio::runtime::Runtime,
    bases: &Bases,
    meter: &CpuMeter,
    site: Site,
    agents: u32,
    pages: u64,
) -> [Comparison; 2] {
    let mut comparisons = [Comparison::default(), Comparison::default()];
    for round in 0..ROUNDS {
        let mut order = [
            (Tabs::Reused, false),
            (Tabs::Reused, true),
            (Tabs::PerPage, false),
            (Tabs::PerPage, true),
        ];
        if round % 2 == 1 {
            order.reverse();
        }
        let mut measures = Vec::new();
        for (slot, (tabs, is_armada)) in order.into_iter().enumerate() {
            let first = (round * 4 + slot as u64) * pages;
            let range = first..first + pages;
            let measure = if is_armada {
                runtime.block_on(armada(
                    site,
                    bases,
                    agents,
                    range,
                    browser_settings(tabs),
                    meter,
                ))
            } else {
                runtime.block_on(plain(site, bases, agents, range, tabs, meter))
            };
            measures.push(((tabs, is_armada), measure));
        }
        for (index, tabs) in [Tabs::Reused, Tabs::PerPage].into_iter().enumerate() {
            let find = |armada: bool| {
                &measures
                    .iter()
                    .find(|((t, a), _)| *t == tabs && *a == armada)
                    .unwrap()
                    .1
            };
            comparisons[index].add(pages, find(true), find(false));
        }
    }
    comparisons
}

fn serve(runtime: &tokio::runtime::Runtime, router: axum::Router) -> String {
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        format!("http://{address}")
    })
}

fn growth(runtime: &tokio::runtime::Runtime, bases: &Bases, meter: &CpuMeter, jobs: u64) -> f64 {
    let began = Instant::now();
    let browser = json!({ "pages": "reuse", "recycle_after_jobs": RECYCLE_AFTER_JOBS });
    let growth = runtime.block_on(armada(Site::Docs, bases, 1, 0..jobs, browser, meter));
    let samples = &growth.samples;
    let mean = |samples: &[(u64, f64)]| {
        samples.iter().map(|&(_, mb)| mb).sum::<f64>() / samples.len() as f64
    };
    let (early, late) = (mean(&samples[..5]), mean(&samples[samples.len() - 5..]));
    let slope = slope_per_thousand(samples);
    println!(
        "Memory over {jobs} jobs on one agent with a reused page and `recycle_after_jobs: \
         {RECYCLE_AFTER_JOBS}`, on the documentation site (key `growth`): its browser's PSS every \
         {GROWTH_EVERY} jobs; growth compares the mean of the last 5 samples with the first 5.\n"
    );
    println!(
        "| key | pages/s | CPU-s/page | MB, first 5 samples | MB, last 5 samples | growth | slope MB per 1,000 jobs | peak MB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| growth | {:.1} | {:.3} | {early:.0} | {late:.0} | {:+.1} % | {slope:+.1} | {:.0} |",
        jobs as f64 / growth.elapsed.as_secs_f64(),
        growth.cpu_seconds / jobs as f64,
        (late / early - 1.0) * 100.0,
        growth.peak_mb_per_browser,
    );
    let series: Vec<String> = samples
        .iter()
        .map(|(jobs, mb)| format!("{jobs}: {mb:.0}"))
        .collect();
    println!("\nSamples (jobs: MB): {}.\n", series.join(", "));
    eprintln!("pages growth: {:.1} s", began.elapsed().as_secs_f64());
    late / early
}

fn main() {
    let (pages, growth_jobs) = sizes();
    let meter = CpuMeter::new().unwrap_or_else(|error| {
        panic!("the bench measures CPU through a cgroup of its own and needs root: {error}")
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let bases = Bases {
        shop: serve(&runtime, site::router_with_stock_delay(0)),
        docs: serve(&runtime, docs_site::router()),
    };
    println!(
        "{ROUNDS} rounds per line of {pages} pages per loop, every page of a line distinct; \
         browsers started included; Armada with embedded backends and agents as tasks. \
         **reused**: the plain loop navigates one page per browser from page to page (the \
         fastest hand-written loop), Armada runs with its default `browser.pages: reuse`. **tab \
         per page**: the plain loop opens a new tab per page before closing the last, Armada \
         runs with `browser.pages: new_per_job`. Rates and CPU are the rounds' medians, ratios \
         the medians of the rounds' ratios, memory the highest peak of the rounds. CPU-s/page \
         is the whole process tree's (this process, the sites it serves, every Chromium), from \
         a cgroup. `ARMADA_BENCH_FULL=1` runs 170 pages per loop.\n"
    );
    println!(
        "| key | site | agents | tabs | armada pages/s | plain pages/s | armada / plain | armada CPU-s/page | plain CPU-s/page | armada / plain CPU | peak PSS MB per browser, armada | plain | armada / plain memory |"
    );
    println!("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let (mut reused_speed, mut reused_cpu, mut memory, mut per_page_speed) = (
        Worst::default(),
        Worst::default(),
        Worst::default(),
        Worst::default(),
    );
    let mut splits = Vec::new();
    for site in [Site::Docs, Site::Shop] {
        for agents in [1, 2, 4] {
            let key = format!("{}-{agents}", site.key());
            if !wanted(&key) {
                continue;
            }
            let began = Instant::now();
            let [reused, per_page] = line(&runtime, &bases, &meter, site, agents, pages);
            reused.print(&key, site, agents, Tabs::Reused);
            per_page.print(&key, site, agents, Tabs::PerPage);
            splits.push(reused.split(&key, Tabs::Reused));
            splits.push(per_page.split(&key, Tabs::PerPage));
            reused_speed.low(&key, reused.speed());
            reused_cpu.high(&key, reused.cpu());
            memory.high(&key, reused.memory());
            per_page_speed.low(&key, per_page.speed());
            eprintln!("pages {key}: {:.1} s", began.elapsed().as_secs_f64());
        }
    }
    println!(
        "\nWhere the CPU goes, in milliseconds per page (medians of the rounds): this process \
         (Armada's agents, queue and monitor, or the plain loop; chromiumoxide; the sites) and \
         the rest of the tree (Chromium).\n"
    );
    println!(
        "| key | tabs | armada: this process | armada: Chromium | plain: this process | plain: Chromium |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for split in &splits {
        println!("{split}");
    }
    println!();
    let growth_ratio = wanted("growth").then(|| growth(&runtime, &bases, &meter, growth_jobs));
    if let Some((key, speed)) = reused_speed.lowest {
        target(
            "reused pages: pages/s at least 0.95× the plain loop on a reused page",
            speed >= 0.95,
            &format!("lowest ratio {speed:.3}, {key}"),
        );
    }
    if let Some((key, cpu)) = reused_cpu.highest {
        target(
            "reused pages: CPU-s per page at most 1.1× the plain loop's",
            cpu <= 1.10,
            &format!("highest ratio {cpu:.3}, {key}"),
        );
    }
    if let Some((key, ratio)) = memory.highest {
        target(
            "reused pages: peak memory per agent at most 1.1× the plain loop's browser",
            ratio <= 1.10,
            &format!("highest ratio {ratio:.2}, {key}"),
        );
    }
    if let Some((key, speed)) = per_page_speed.lowest {
        target(
            "tab per page: pages/s at least 0.95× the plain loop with a tab per page",
            speed >= 0.95,
            &format!("lowest ratio {speed:.3}, {key}"),
        );
    }
    if let Some(ratio) = growth_ratio {
        target(
            "memory over 2,000 jobs on a reused page (recycling on) grows by at most 10 %",
            ratio <= 1.10,
            &format!(
                "{:+.1} % from the first 5 samples to the last 5",
                (ratio - 1.0) * 100.0
            ),
        );
    }
    drop(meter);
}

//! The dashboard end to end in a real headless Chromium: runs launched from its Launch page,
//! jobs and events changing live without a reload, a failed job's screenshot, and two runs
//! compared. Screenshots of each page are saved under `target/tmp/dashboard/`.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use armada::testing::binary::{self, ProjectCopy};
use chromiumoxide::cdp::browser_protocol::emulation::{
    ClearDeviceMetricsOverrideParams, SetDeviceMetricsOverrideParams,
};
use chromiumoxide::page::ScreenshotParams;
use chromiumoxide::{Browser, BrowserConfig, Page};
use futures::StreamExt;
use serde_json::Value;

/// A copy of the catalog project whose jobs include slow pages (so the run is still going
/// when the dashboard opens) and a broken one (a failure with a screenshot).
fn project() -> ProjectCopy {
    let copy = ProjectCopy::of(Path::new(env!("CARGO_MANIFEST_DIR")));
    copy.write("data_agent.csv", "targetted_agent\n").write(
        "data_job.csv",
        "targetted_job,kind,id\n0,product,1\n1,slow,\n2,broken,\n3,slow,\n4,product,2\n5,slow,\n6,product,3\n",
    );
    copy
}

/// The project's binary serves the shop on 127.0.0.1:8377: one dashboard at a time.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `catalog-orchestrate monitor` on a free port; interrupted (like Ctrl-C) when dropped.
struct Dashboard {
    child: Child,
    url: String,
}

impl Dashboard {
    fn start(project: &Path) -> Self {
        Self::start_with_token(project, None)
    }

    fn start_with_token(project: &Path, token: Option<&str>) -> Self {
        let mut command = binary::command(env!("CARGO_BIN_EXE_catalog-orchestrate"));
        if let Some(token) = token {
            command.env("ARMADA_MONITOR_TOKEN", token);
        }
        let mut child = command
            .args(["monitor", "--listen", "127.0.0.1:0", "--project"])
            .arg(project)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let url = binary::announced_url(&mut child);
        Self { child, url }
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
    }
}

async fn eval(page: &Page, expression: &str) -> Value {
    page.evaluate(expression)
        .await
        .unwrap_or_else(|error| panic!("`{expression}`: {error}"))
        .into_value()
        .unwrap_or(Value::Null)
}

/// Evaluates `expression` until it is truthy; returns its value.
async fn wait_for(page: &Page, expression: &str, what: &str) -> Value {
    for _ in 0..600 {
        if let Ok(result) = page.evaluate(expression).await {
            let value: Value = result.into_value().unwrap_or(Value::Null);
            let truthy = match &value {
                Value::Null | Value::Bool(false) => false,
                Value::Number(number) => number.as_f64() != Some(0.0),
                Value::String(text) => !text.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what} (`{expression}`)");
}

async fn route(page: &Page, hash: &str, ready: &str) {
    eval(
        page,
        &format!("document.body.removeAttribute('data-ready'); location.hash = '{hash}'; true"),
    )
    .await;
    wait_for(
        page,
        &format!("document.body.dataset.ready === '{ready}'"),
        &format!("the {ready} page"),
    )
    .await;
}

fn artifacts() -> PathBuf {
    let folder = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&folder).unwrap();
    folder
}

async fn screenshot(page: &Page, name: &str) {
    let path = artifacts().join(format!("{name}.png"));
    page.save_screenshot(ScreenshotParams::builder().full_page(true).build(), &path)
        .await
        .unwrap();
    println!("screenshot: {}", path.display());
}

/// Fills the Launch form with `agents` and the `fields` given by element id, as a person
/// types them, and submits it once the form has checked itself; returns the new run's id
/// once its page is showing.
async fn launch_from_form(page: &Page, agents: u32, fields: &[(&str, &str)]) -> String {
    route(page, "#/launch", "launch").await;
    let agents = agents.to_string();
    for (id, value) in [("launch-agents", agents.as_str())].iter().chain(fields) {
        let value = serde_json::to_string(value).unwrap();
        eval(
            page,
            &format!(
                "(() => {{ const field = document.getElementById('{id}'); field.value = {value}; \
                 field.dispatchEvent(new Event('input', {{ bubbles: true }})); return true; }})()"
            ),
        )
        .await;
    }
    wait_for(
        page,
        &format!(
            "(document.getElementById('launch-check') || {{}}).textContent?.includes('Ready: {agents} agent')"
        ),
        "the form's own check",
    )
    .await;
    screenshot(page, &format!("launch-{agents}-agents")).await;
    eval(
        page,
        "document.getElementById('launch-submit').click(); true",
    )
    .await;
    let run_id = wait_for(
        page,
        "document.body.dataset.ready === 'run' && document.getElementById('run-page').dataset.runId",
        "the launched run's page",
    )
    .await;
    run_id.as_str().unwrap().to_owned()
}

/// Screenshots the page at 1,400 and 800 px wide, checking at each that no table is cut off:
/// a table wider than the window must sit in a box that scrolls sideways.
async fn at_both_widths(page: &Page, name: &str) {
    for width in [1400, 800] {
        page.execute(SetDeviceMetricsOverrideParams::new(width, 900, 1.0, false))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let clipped = eval(
            page,
            "[...document.querySelectorAll('table')].filter(table => { \
               if (table.getBoundingClientRect().right <= window.innerWidth + 1) return false; \
               for (let box = table.parentElement; box; box = box.parentElement) { \
                 const x = getComputedStyle(box).overflowX; \
                 if ((x === 'auto' || x === 'scroll') && box.getBoundingClientRect().right <= window.innerWidth + 1) return false; \
               } \
               return true; }).map(table => table.id || table.className || 'a table')",
        )
        .await;
        assert_eq!(clipped, serde_json::json!([]), "{name} at {width} px");
        screenshot(page, &format!("{name}-{width}")).await;
    }
    page.execute(ClearDeviceMetricsOverrideParams::default())
        .await
        .unwrap();
}

/// The page was not reloaded since the test marked it (`window.noReloadSince`).
async fn assert_not_reloaded(page: &Page) {
    let marked = eval(page, "typeof window.noReloadSince === 'number'").await;
    assert_eq!(marked, true, "the page was reloaded");
}

/// No event's raw JSON is open: it shows only when asked for.
async fn assert_no_raw_json_shown(page: &Page) {
    let open = eval(
        page,
        "document.querySelectorAll('details.raw[open]').length",
    )
    .await;
    assert_eq!(open, 0, "raw JSON shown by default");
    let raw = eval(page, "document.querySelectorAll('details.raw').length").await;
    assert!(raw.as_u64().unwrap() > 0, "events have a raw toggle");
}

fn statuses_js() -> &'static str {
    "Array.from(document.querySelectorAll('#jobs-table tr[data-job-index] td.job-status')).map(cell => cell.textContent.trim())"
}

/// A headless Chromium (its profile in `folder`) and the task driving it, with a page open on
/// the dashboard at `url`.
async fn open_viewer(folder: &Path, url: &str) -> (Browser, tokio::task::JoinHandle<()>, Page) {
    let executable = ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .expect("Chromium (cargo xtask test installs it)");
    let config = BrowserConfig::builder()
        .chrome_executable(executable)
        .user_data_dir(folder.join("viewer-profile"))
        .no_sandbox()
        .window_size(1366, 768)
        .args(["disable-gpu", "no-first-run", "disable-dev-shm-usage"])
        .build()
        .unwrap();
    let (browser, mut handler) = Browser::launch(config).await.unwrap();
    let driver = tokio::spawn(async move { while handler.next().await.is_some() {} });
    let page = browser.new_page(format!("{url}/")).await.unwrap();
    (browser, driver, page)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_live_feed_opens_with_a_ticket() {
    let _turn = TURN.lock().await;
    let dir = project();
    let token = "t0k+en/with=reserved";
    let dashboard = Dashboard::start_with_token(dir.path(), Some(token));
    let (mut browser, driver, page) = open_viewer(dir.path(), &dashboard.url).await;
    let remember = format!(
        "sessionStorage.setItem('armada-token', {}); location.reload(); true",
        serde_json::json!(token)
    );
    eval(&page, &remember).await;
    wait_for(
        &page,
        "document.body.dataset.ready === 'runs' && document.body.innerText.includes('Live: updates arrive')",
        "the runs page, live",
    )
    .await;
    browser.close().await.unwrap();
    browser.wait().await.unwrap();
    driver.abort();
    drop(dashboard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_follows_launches_and_compares_runs_live() {
    let _turn = TURN.lock().await;
    let dir = project();
    let dashboard = Dashboard::start(dir.path());
    let (mut browser, driver, page) = open_viewer(dir.path(), &dashboard.url).await;
    wait_for(
        &page,
        "document.body.dataset.ready === 'runs'",
        "the runs page",
    )
    .await;

    // A run launched from the Launch page, named and tagged, with an override of the
    // template; its page opens while jobs still run.
    let first = launch_from_form(
        &page,
        1,
        &[
            ("launch-name", "catalog smoke"),
            ("launch-tags", "ci, smoke"),
            (
                "launch-overrides",
                r#"{"run_message": {"retry_backoff_secs": 0.1}}"#,
            ),
        ],
    )
    .await;
    eval(&page, "window.noReloadSince = Date.now(); true").await;
    let label = wait_for(
        &page,
        "(() => { const name = document.querySelector('#run-page .run-name'); \
         const tags = [...document.querySelectorAll('#run-page ul.tags .tag')].map(t => t.textContent); \
         return name && tags.length ? [name.textContent, tags] : null; })()",
        "the run's name and tags",
    )
    .await;
    assert_eq!(label, serde_json::json!(["catalog smoke", ["ci", "smoke"]]));
    let settings = eval(
        &page,
        &format!("fetch('/api/v1/runs/{first}').then(r => r.json()).then(run => run.settings)"),
    )
    .await;
    assert_eq!(settings["retry_backoff_secs"], 0.1, "{settings}");
    let charts_before = wait_for(
        &page,
        "(() => { const c = document.getElementById('run-charts'); \
         return c && !c.hidden && c.querySelectorAll('svg').length >= 2 && c.innerHTML; })()",
        "the run's charts",
    )
    .await;
    let before: Vec<String> = serde_json::from_value(eval(&page, statuses_js()).await).unwrap();
    assert_eq!(before.len(), 7, "{before:?}");
    let events_before = eval(
        &page,
        "document.querySelectorAll('#event-stream [data-seq]').length",
    )
    .await;
    assert!(
        before
            .iter()
            .any(|status| status != "succeeded" && status != "failed"),
        "the run is still going when its page opens: {before:?}"
    );
    screenshot(&page, "run-live").await;
    // Jobs change state and events arrive without a reload.
    wait_for(
        &page,
        &format!(
            "{}.filter(s => s === 'succeeded').length >= 4",
            statuses_js()
        ),
        "jobs succeeding live",
    )
    .await;
    wait_for(
        &page,
        &format!("{}.includes('failed')", statuses_js()),
        "the broken job failing live",
    )
    .await;
    let events_after = eval(
        &page,
        "document.querySelectorAll('#event-stream [data-seq]').length",
    )
    .await;
    assert!(
        events_after.as_u64() > events_before.as_u64(),
        "{events_before} -> {events_after}"
    );
    assert_not_reloaded(&page).await;
    wait_for(
        &page,
        "(() => { const p = document.getElementById('run-progress'); return p && p.max > 0 && p.value === p.max; })()",
        "the run to complete",
    )
    .await;
    assert_not_reloaded(&page).await;
    // The charts followed the run without a reload.
    wait_for(
        &page,
        &format!("document.getElementById('run-charts').innerHTML !== {charts_before}"),
        "the charts to change",
    )
    .await;
    assert_not_reloaded(&page).await;
    at_both_widths(&page, "run-done").await;

    // A succeeded job's page: its input and return value, no raw JSON until asked.
    let succeeded = wait_for(
        &page,
        "(() => { const row = Array.from(document.querySelectorAll('#jobs-table tr[data-job-index]')).find(r => r.querySelector('td.job-status').textContent.trim() === 'succeeded'); return row && row.dataset.jobIndex; })()",
        "a succeeded job's row",
    )
    .await;
    let succeeded = succeeded.as_str().unwrap();
    route(&page, &format!("#/runs/{first}/jobs/{succeeded}"), "job").await;
    wait_for(
        &page,
        "document.querySelector('#job-input pre')?.textContent.includes('\"kind\"') \
         && document.querySelectorAll('#job-return table tr, #job-return pre').length > 0 \
         && document.querySelectorAll('#job-attempts tbody tr').length >= 1",
        "the job's input, return value and attempts",
    )
    .await;
    assert_no_raw_json_shown(&page).await;
    at_both_widths(&page, "succeeded-job").await;

    // The failed job's page shows its screenshot.
    route(&page, &format!("#/runs/{first}"), "run").await;
    let failed = wait_for(
        &page,
        "(() => { const row = Array.from(document.querySelectorAll('#jobs-table tr[data-job-index]')).find(r => r.querySelector('td.job-status').textContent.trim() === 'failed'); return row && row.dataset.jobIndex; })()",
        "the failed job's row",
    )
    .await;
    assert_eq!(failed, "2");
    route(&page, &format!("#/runs/{first}/jobs/2"), "job").await;
    wait_for(
        &page,
        "Array.from(document.querySelectorAll('img.attachment')).some(img => img.complete && img.naturalWidth > 100)",
        "the failure screenshot",
    )
    .await;
    let timeline = eval(
        &page,
        "document.querySelectorAll('#job-events [data-seq]').length",
    )
    .await;
    assert!(timeline.as_u64().unwrap() >= 3, "{timeline}");
    // Each attempt in a row of its own, the failing one with its error and evidence.
    let attempts = eval(
        &page,
        "[...document.querySelectorAll('#job-attempts tbody tr')].map(r => r.textContent)",
    )
    .await;
    let attempts: Vec<String> = serde_json::from_value(attempts).unwrap();
    assert!(
        attempts.iter().any(|attempt| attempt.contains("failed")),
        "{attempts:?}"
    );
    assert!(
        eval(
            &page,
            "document.querySelectorAll('#job-attempts a').length > 0"
        )
        .await
        .as_bool()
        .unwrap(),
        "the failing attempt links its evidence"
    );
    wait_for(
        &page,
        "document.querySelector('#job-input pre')?.textContent.includes('\"kind\"')",
        "the failed job's input",
    )
    .await;
    assert_no_raw_json_shown(&page).await;
    at_both_widths(&page, "failed-job").await;

    // The jobs table sorted by a click on a header and searched by input, both kept in the
    // address: the same jobs in the same order as the API gives them.
    route(&page, &format!("#/runs/{first}"), "run").await;
    let table = "JSON.stringify(Array.from(document.querySelectorAll('#jobs-table tr[data-job-index]')).map(r => Number(r.dataset.jobIndex)))";
    let api_order = |query: &str| {
        format!(
            "fetch('/api/v1/runs/{first}/jobs?{query}').then(r => r.json()).then(b => JSON.stringify(b.jobs.map(j => j.index)))"
        )
    };
    let durations = eval(
        &page,
        &format!("fetch('/api/v1/runs/{first}/jobs?sort=duration').then(r => r.json()).then(b => b.jobs.map(j => j.duration_ms))"),
    )
    .await;
    let durations: Vec<f64> = serde_json::from_value(durations).unwrap();
    assert_eq!(durations.len(), 7, "{durations:?}");
    assert!(durations.is_sorted(), "{durations:?}");
    let by_duration = eval(&page, &api_order("sort=duration")).await;
    eval(
        &page,
        "document.querySelector('#jobs-table th[data-sort=\"duration\"] button').click(); true",
    )
    .await;
    wait_for(
        &page,
        &format!("{table} === {by_duration}"),
        "the jobs sorted by duration",
    )
    .await;
    let shown = eval(
        &page,
        "[document.querySelector('#jobs-table th[data-sort=\"duration\"]').getAttribute('aria-sort'), location.hash]",
    )
    .await;
    assert_eq!(shown[0], "ascending", "{shown}");
    assert!(
        shown[1].as_str().unwrap().ends_with("?sort=duration"),
        "{shown}"
    );
    let search = |text: &str| {
        format!(
            "(() => {{ const box = document.getElementById('jobs-search'); box.value = '{text}'; \
             box.form.requestSubmit(); return true; }})()"
        )
    };
    eval(&page, &search("kind")).await;
    wait_for(
        &page,
        "document.getElementById('jobs-search-note').textContent.includes('key=value')",
        "the malformed search's message",
    )
    .await;
    eval(&page, &search("kind=slow")).await;
    let slow = eval(&page, &api_order("sort=duration&input=kind:slow")).await;
    let mut indexes: Vec<u64> = serde_json::from_str(slow.as_str().unwrap()).unwrap();
    indexes.sort_unstable();
    assert_eq!(indexes, [1, 3, 5]);
    wait_for(
        &page,
        &format!("{table} === {slow}"),
        "the slow jobs by duration",
    )
    .await;
    assert_eq!(
        eval(
            &page,
            "document.getElementById('jobs-search-note').textContent"
        )
        .await,
        ""
    );
    let hash = eval(&page, "location.hash").await;
    assert!(
        hash.as_str()
            .unwrap()
            .ends_with("?sort=duration&q=kind%3Dslow"),
        "{hash}"
    );
    // Opened from an address, the page sorts and searches as it says.
    route(
        &page,
        &format!("#/runs/{first}?sort=duration&order=desc&q=kind%3Dslow"),
        "run",
    )
    .await;
    let slow_down = eval(
        &page,
        &api_order("sort=duration&order=desc&input=kind:slow"),
    )
    .await;
    assert_eq!(eval(&page, table).await, slow_down);
    assert_eq!(
        eval(&page, "document.getElementById('jobs-search').value").await,
        "kind=slow"
    );
    screenshot(&page, "jobs-sorted-searched").await;

    // A second run from the Launch page, then the two side by side.
    let second = launch_from_form(&page, 2, &[]).await;
    assert_ne!(first, second);
    wait_for(
        &page,
        "(() => { const p = document.getElementById('run-progress'); return p && p.max > 0 && p.value === p.max; })()",
        "the second run to complete",
    )
    .await;
    route(&page, &format!("#/compare?a={first}&b={second}"), "compare").await;
    let rates = eval(
        &page,
        "[document.querySelector('#compare-a .success-rate').textContent, document.querySelector('#compare-b .success-rate').textContent]",
    )
    .await;
    let rates: Vec<String> = serde_json::from_value(rates).unwrap();
    // 6 of 7 jobs succeed in each run: the broken page fails in both.
    assert!(rates.iter().all(|rate| rate.contains("85.7")), "{rates:?}");
    screenshot(&page, "compare").await;

    route(&page, "#/", "runs").await;
    let listed = eval(&page, "Array.from(document.querySelectorAll('#runs-table tr[data-run-id]')).map(r => r.dataset.runId)").await;
    let listed: Vec<String> = serde_json::from_value(listed).unwrap();
    assert!(
        listed.contains(&first) && listed.contains(&second),
        "{listed:?}"
    );
    at_both_widths(&page, "runs").await;

    // A page of another site posting the Launch form to the dashboard (a multipart form needs
    // no preflight): the browser sends it, the service refuses it, and no run starts.
    let count_runs = "fetch('/api/v1/runs').then(r => r.json()).then(body => body.runs.length)";
    let runs_before = eval(&page, count_runs).await;
    let other_site = serve_other_site(&dashboard.url).await;
    let attacker = browser.new_page(other_site.as_str()).await.unwrap();
    let sent = wait_for(&attacker, "window.launchSent", "the other site's request").await;
    assert_eq!(sent, "sent", "the browser sent the request");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        eval(&page, count_runs).await,
        runs_before,
        "a page of another site launched a run"
    );

    browser.close().await.unwrap();
    browser.wait().await.unwrap();
    driver.abort();
    drop(dashboard);
}

/// Serves, on another port of 127.0.0.1 (another origin), a page that posts the dashboard's
/// Launch form to `dashboard` as soon as it loads; returns its URL.
async fn serve_other_site(dashboard: &str) -> String {
    let html = format!(
        "<!doctype html><title>another site</title><script>\
         const form = new FormData(); form.append('agents', '1');\
         fetch('{dashboard}/api/v1/launch', {{ method: 'POST', body: form, mode: 'no-cors' }})\
           .then(() => {{ window.launchSent = 'sent'; }}, error => {{ window.launchSent = 'failed: ' + error; }});\
         </script>"
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let site = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let html = html.clone();
            async move { axum::response::Html(html) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, site).await });
    format!("http://{address}/")
}

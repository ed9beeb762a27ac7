//! The catalog project with a real Chromium: what it extracts, each agent's identity as the
//! page's JavaScript sees it, a proxy on 127.0.0.1, rewritten responses, a browser killed
//! mid-job, failure evidence, and no browser or profile left behind after a run, Ctrl-C, or
//! `kill -9` of an agent. The binary serves the shop on 127.0.0.1:8377, so these tests take
//! turns.
//!
//! Every test runs on a copy of the project whose `browser.pages` is
//! `ARMADA_TEST_BROWSER_PAGES` when set: `cargo xtask test` runs them with the default (`reuse`)
//! and again with `new_per_job`.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use armada::testing::binary::{self, Launch, ProjectCopy};
use catalog::site;
use serde_json::{Value, json};

static SHOP: Mutex<()> = Mutex::new(());

fn turn() -> MutexGuard<'static, ()> {
    SHOP.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A copy of the catalog project with its agent and job CSVs chosen by the test, and the page
/// mode of `ARMADA_TEST_BROWSER_PAGES`.
fn project(agent_csv: &str, job_csv: &str) -> ProjectCopy {
    let copy = ProjectCopy::of(Path::new(env!("CARGO_MANIFEST_DIR")));
    copy.edit_template(|template| {
        if let Ok(pages) = std::env::var("ARMADA_TEST_BROWSER_PAGES") {
            template["default_agent_message"]["browser"]["pages"] = json!(pages);
        }
    })
    .write("data_agent.csv", agent_csv)
    .write("data_job.csv", job_csv);
    copy
}

/// A copy of the catalog project as it ships.
fn default_project() -> ProjectCopy {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let read = |file: &str| std::fs::read_to_string(source.join(file)).unwrap();
    project(&read("data_agent.csv"), &read("data_job.csv"))
}

/// How long a test waits for a run's end.
const RUN_LIMIT: Duration = Duration::from_secs(180);

fn launch(project: &Path, results: &Path, args: &[&str]) -> Launch {
    let mut command = binary::command(env!("CARGO_BIN_EXE_catalog-orchestrate"));
    command
        .arg("launch")
        .arg("--project")
        .arg(project)
        .arg("--output")
        .arg(results)
        .args(args);
    Launch::start(command, results)
}

/// The run's exit code, stdout and results by job index.
fn finish(run: Launch) -> (Option<i32>, String, BTreeMap<u64, Value>) {
    let finished = run.finish(RUN_LIMIT);
    let results = finished
        .results
        .into_iter()
        .map(|result| (result["index"].as_u64().unwrap(), result))
        .collect();
    (finished.status.code(), finished.stdout, results)
}

/// Waits until `count` jobs are running, as the run's dashboard API shows them.
fn wait_for_running_jobs(run: &Launch, count: usize) {
    let dashboard = run.dashboard().expect("the launch serves its dashboard");
    let path = format!("/api/v1/runs/{}/jobs?status=running", run.run_id());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut stream = TcpStream::connect(dashboard).unwrap_or_else(|error| {
            panic!("the run ended before {count} jobs ran together (its dashboard: {error})")
        });
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {dashboard}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
        let running = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|page| Some(page["jobs"].as_array()?.len()))
            .unwrap_or(0);
        if running >= count {
            return;
        }
        assert!(Instant::now() < deadline, "{count} jobs never ran together");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The run's main browser processes when agents are tasks: they are direct children of the
/// launch process (their helpers are children of the browsers).
fn child_browsers(run: &Launch) -> Vec<u32> {
    let launcher = run.pid().to_string();
    let output = Command::new("pgrep")
        .args(["-P", &launcher, "-f", &format!("armada/{}/", run.run_id())])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

fn wait_for_browsers(run: &Launch, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while browsers_of(run.run_id()).len() < count {
        assert!(Instant::now() < deadline, "{count} browsers never started");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Chromium main processes of a run: their profile sits in the run's scratch folder.
fn browsers_of(run_id: &str) -> Vec<u32> {
    let output = Command::new("pgrep")
        .args(["-f", &format!("remote-debugging-port=0.*armada/{run_id}/")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

/// Any process of the run's browsers, main or child (renderers, zygote, GPU).
fn any_process_of(run_id: &str) -> Vec<String> {
    let output = Command::new("pgrep")
        .args(["-a", "-f", &format!("armada/{run_id}/")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn assert_nothing_left(run_id: &str) {
    // Chromium's children go away a moment after their browser.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !any_process_of(run_id).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        any_process_of(run_id),
        Vec::<String>::new(),
        "browser processes left"
    );
    let scratch = std::env::temp_dir().join("armada").join(run_id);
    assert!(
        !scratch.exists(),
        "profile folders left in {}",
        scratch.display()
    );
}

fn agent_identities() -> BTreeMap<u64, (&'static str, &'static str, &'static str)> {
    BTreeMap::from([
        (0, ("ArmadaAgent/0", "Europe/Paris", "fr-FR")),
        (1, ("ArmadaAgent/1", "America/New_York", "en-US")),
        (2, ("ArmadaAgent/2", "Asia/Tokyo", "ja-JP")),
    ])
}

#[test]
fn three_agents_extract_every_page_each_with_its_own_identity() {
    let _turn = turn();
    let out = tempfile::tempdir().unwrap();
    let project = default_project();
    let run = launch(
        project.path(),
        &out.path().join("r.jsonl"),
        &["--agents", "3"],
    );
    let run_id = run.run_id().to_owned();
    let (code, stdout, results) = finish(run);
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(results.len(), 21);
    for (index, result) in &results {
        assert_eq!(result["status"], "succeeded", "job {index}: {result}");
    }
    for id in 1..=12u32 {
        let output = &results[&u64::from(id - 1)]["output"];
        assert_eq!(output["name"], site::name(id));
        assert_eq!(output["price"], site::price(id));
        assert_eq!(output["sku"], format!("SKU-{id:04}"));
        assert_eq!(
            output["stock"],
            format!("in stock: {}", site::stock(id)),
            "rendered by JS"
        );
    }
    for page in 1..=4u32 {
        let output = &results[&u64::from(11 + page)]["output"];
        let first = (page - 1) * site::PAGE_SIZE + 1;
        let names: Vec<String> = (first..first + site::PAGE_SIZE).map(site::name).collect();
        assert_eq!(output["products"], json!(names));
        assert_eq!(output["has_next"], page < 4);
        assert_eq!(
            output["blocked_images"], 5,
            "images are blocked by the intercept rule"
        );
    }
    assert_eq!(results[&16]["output"]["welcome"], "Welcome, ada");
    assert_eq!(results[&20]["output"]["done"], "Finally");
    let identities = agent_identities();
    for index in 17..=19 {
        let result = &results[&index];
        let (user_agent, timezone, language) = identities[&result["agent"].as_u64().unwrap()];
        let who = &result["output"];
        assert!(
            who["user_agent"].as_str().unwrap().ends_with(user_agent),
            "{who}"
        );
        assert_eq!(who["timezone"], timezone);
        assert_eq!(who["language"], language);
        assert_eq!(who["locale"], language);
        assert_eq!(who["width"], 1280);
    }
    assert_nothing_left(&run_id);
}

/// A forward HTTP proxy on 127.0.0.1 that requires `user:pass` and records the User-Agent
/// of every request it forwarded.
struct Proxy {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
    refused: Arc<Mutex<u32>>,
}

fn start_proxy() -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(Mutex::new(0));
    let (seen_by_thread, refused_by_thread) = (Arc::clone(&seen), Arc::clone(&refused));
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let (seen, refused) = (Arc::clone(&seen_by_thread), Arc::clone(&refused_by_thread));
            std::thread::spawn(move || {
                let _ = forward(client, &seen, &refused);
            });
        }
    });
    Proxy {
        port,
        seen,
        refused,
    }
}

fn forward(
    mut client: TcpStream,
    seen: &Mutex<Vec<String>>,
    refused: &Mutex<u32>,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line.trim().is_empty() {
            break;
        }
        headers.push(line.trim_end().to_owned());
    }
    let header = |name: &str| {
        headers.iter().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    };
    // "user:pass" in base64.
    if header("proxy-authorization").as_deref() != Some("Basic dXNlcjpwYXNz") {
        *refused.lock().unwrap() += 1;
        client.write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
        return Ok(());
    }
    seen.lock()
        .unwrap()
        .push(header("user-agent").unwrap_or_default());
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or("GET"), parts.next().unwrap_or("/"));
    let rest = target.strip_prefix("http://").unwrap_or(target);
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(host, path)| {
            (host, format!("/{path}"))
        });
    let mut upstream = TcpStream::connect(host)?;
    write!(
        upstream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
    )?;
    for line in &headers {
        let lower = line.to_ascii_lowercase();
        if !lower.starts_with("proxy-")
            && !lower.starts_with("connection")
            && !lower.starts_with("host")
        {
            write!(upstream, "{line}\r\n")?;
        }
    }
    upstream.write_all(b"\r\n")?;
    std::io::copy(&mut upstream, &mut client)?;
    Ok(())
}

#[test]
fn a_proxy_sees_the_agents_configured_to_use_it_and_gets_its_credentials_through_cdp() {
    let _turn = turn();
    let proxy = start_proxy();
    let proxied = format!("http://user:pass@127.0.0.1:{}", proxy.port);
    let agents = format!(
        "targetted_agent,identity.user_agent,proxy.server,proxy.bypass\n\
         0,ArmadaAgent/0,{proxied},\"[\"\"<-loopback>\"\"]\"\n\
         1,ArmadaAgent/1,,\n\
         2,ArmadaAgent/2,{proxied},\"[\"\"<-loopback>\"\"]\"\n"
    );
    let jobs: String = (0..9).map(|index| format!("{index},whoami\n")).collect();
    let dir = project(&agents, &format!("targetted_job,kind\n{jobs}"));
    let run = launch(dir.path(), &dir.path().join("r.jsonl"), &["--agents", "3"]);
    let (code, stdout, results) = finish(run);
    assert_eq!(code, Some(0), "{stdout}");
    let seen: BTreeSet<String> = proxy.seen.lock().unwrap().iter().cloned().collect();
    let ran: BTreeSet<u64> = results
        .values()
        .map(|r| r["agent"].as_u64().unwrap())
        .collect();
    for agent in [0, 2] {
        if ran.contains(&agent) {
            assert!(seen.contains(&format!("ArmadaAgent/{agent}")), "{seen:?}");
        }
    }
    assert!(
        !seen.contains("ArmadaAgent/1"),
        "agent 1 has no proxy: {seen:?}"
    );
    assert!(
        seen.iter().all(|ua| ua.starts_with("ArmadaAgent/")),
        "{seen:?}"
    );
    assert!(
        *proxy.refused.lock().unwrap() > 0,
        "the proxy asked for credentials"
    );
}

#[test]
fn an_intercepted_response_is_rewritten() {
    let _turn = turn();
    let agents = "targetted_agent,intercept.rewrite\n0,\"[{\"\"url\"\": \"\"*/product/*\"\", \"\"find\"\": \"\"Product\"\", \"\"replace\"\": \"\"Rewritten\"\"}]\"\n";
    let dir = project(
        agents,
        "targetted_job,kind,id,page\n0,product,3,\n1,listing,,1\n",
    );
    let run = launch(dir.path(), &dir.path().join("r.jsonl"), &["--agents", "1"]);
    let (code, stdout, results) = finish(run);
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(results[&0]["output"]["name"], "Rewritten 3");
    // Only responses whose URL matches are rewritten.
    assert_eq!(results[&1]["output"]["products"][0], "Product 1");
}

#[test]
fn a_browser_killed_mid_job_is_replaced_and_its_job_retried() {
    let _turn = turn();
    let jobs: String = (0..6).map(|index| format!("{index},slow\n")).collect();
    let dir = project("targetted_agent\n", &format!("targetted_job,kind\n{jobs}"));
    let run = launch(dir.path(), &dir.path().join("r.jsonl"), &["--agents", "2"]);
    wait_for_browsers(&run, 2);
    // Kill a browser in the middle of a job, not before its first one.
    wait_for_running_jobs(&run, 2);
    let victim = child_browsers(&run)[0];
    assert!(
        Command::new("kill")
            .args(["-9", &victim.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let run_id = run.run_id().to_owned();
    let (code, stdout, results) = finish(run);
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(results.len(), 6);
    assert!(
        results.values().all(|r| r["status"] == "succeeded"),
        "{results:?}"
    );
    let attempts: u64 = results
        .values()
        .map(|r| r["attempts"].as_u64().unwrap())
        .sum();
    assert!(
        attempts > 6,
        "the job on the killed browser was not retried: {stdout}\n{results:?}"
    );
    assert_nothing_left(&run_id);
}

#[test]
fn a_failed_job_leaves_a_screenshot_its_html_and_console_messages() {
    let _turn = turn();
    let dir = project(
        "targetted_agent\n",
        "targetted_job,kind\n0,broken\n1,product\n",
    );
    let run = launch(dir.path(), &dir.path().join("r.jsonl"), &["--agents", "1"]);
    let (code, stdout, results) = finish(run);
    assert_eq!(code, Some(2), "a failed job: {stdout}");
    let broken = &results[&0];
    assert_eq!(broken["status"], "failed");
    let folder = PathBuf::from(broken["evidence"].as_str().expect("evidence"));
    let png = std::fs::read(folder.join("screenshot.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let html = std::fs::read_to_string(folder.join("page.html")).unwrap();
    assert!(html.contains("Something broke"), "{html}");
    let console = std::fs::read_to_string(folder.join("console.txt")).unwrap();
    assert!(console.contains("the shop is down"), "{console}");
    assert!(
        console.contains("url: http://127.0.0.1:8377/error"),
        "{console}"
    );
    assert!(stdout.contains("evidence"), "{stdout}");
    assert!(results[&1]["evidence"].is_null());
}

#[test]
fn ctrl_c_leaves_no_browser_and_no_profile() {
    let _turn = turn();
    let jobs: String = (0..8).map(|index| format!("{index},slow\n")).collect();
    let dir = project("targetted_agent\n", &format!("targetted_job,kind\n{jobs}"));
    let run = launch(
        dir.path(),
        &dir.path().join("r.jsonl"),
        &["--agents", "2", "--grace-secs", "5"],
    );
    wait_for_browsers(&run, 2);
    let pid = run.pid().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let run_id = run.run_id().to_owned();
    let (code, stdout, results) = finish(run);
    assert_eq!(code, Some(130), "{stdout}");
    assert_eq!(results.len(), 8, "every job has a line");
    assert_nothing_left(&run_id);
}

#[test]
fn kill_9_of_an_agent_process_leaves_no_browser_and_no_profile() {
    let _turn = turn();
    for address in ["127.0.0.1:6379", "127.0.0.1:5672"] {
        assert!(
            TcpStream::connect(address).is_ok(),
            "Redis and RabbitMQ must run (cargo xtask test starts them): nothing at {address}"
        );
    }
    let jobs: String = (0..8).map(|index| format!("{index},slow\n")).collect();
    let dir = project("targetted_agent\n", &format!("targetted_job,kind\n{jobs}"));
    let run = launch(
        dir.path(),
        &dir.path().join("r.jsonl"),
        &[
            "--agents",
            "2",
            "--queue",
            "amqp://guest:guest@127.0.0.1:5672/%2f",
            "--config-store",
            "redis://127.0.0.1:6379",
        ],
    );
    wait_for_browsers(&run, 2);
    let agents = Command::new("pgrep")
        .args(["-f", &format!("agent --run-id {}", run.run_id())])
        .output()
        .unwrap();
    let agent = String::from_utf8_lossy(&agents.stdout)
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_owned();
    assert!(
        Command::new("kill")
            .args(["-9", &agent])
            .status()
            .unwrap()
            .success()
    );
    let run_id = run.run_id().to_owned();
    let (code, stdout, results) = finish(run);
    assert_eq!(code, Some(0), "{stdout}");
    // The launcher started the killed agent again, with a browser of its own.
    assert!(!stdout.contains("exited abnormally"), "{stdout}");
    assert_eq!(results.len(), 8);
    assert!(results.values().all(|r| r["status"] == "succeeded"));
    assert_nothing_left(&run_id);
}

/// Answers `GET /fetch_proxy` with `{"proxy": URL}`, as the original system's provider did.
fn start_provider(proxy_url: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut client in listener.incoming().flatten() {
            let mut request = [0u8; 1024];
            let _ = client.read(&mut request);
            let body = json!({ "proxy": proxy_url }).to_string();
            let _ = write!(
                client,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn proxies_come_from_a_list_or_a_provider_and_a_dead_one_is_rotated_away_for_free() {
    let _turn = turn();
    let proxy = start_proxy();
    let live = format!("http://user:pass@127.0.0.1:{}", proxy.port);
    // Nothing listens on a port just closed: the first proxy of agent 0's list is dead.
    let dead_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("http://127.0.0.1:{dead_port}");
    let provider = start_provider(live.clone());
    let agents = format!(
        "targetted_agent,identity.user_agent,proxy.list,proxy.provider,proxy.bypass\n\
         0,ArmadaAgent/0,\"[\"\"{dead}\"\", \"\"{live}\"\"]\",,\"[\"\"<-loopback>\"\"]\"\n\
         1,ArmadaAgent/1,,http://127.0.0.1:{provider}/fetch_proxy,\"[\"\"<-loopback>\"\"]\"\n"
    );
    let jobs: String = (0..12).map(|index| format!("{index},whoami\n")).collect();
    let dir = project(&agents, &format!("targetted_job,kind\n{jobs}"));
    let run = launch(
        dir.path(),
        &dir.path().join("r.jsonl"),
        &["--agents", "2", "--max-attempts", "1"],
    );
    let (code, stdout, results) = finish(run);
    // max_attempts is 1: the dead proxy's failure did not count as an attempt.
    assert_eq!(code, Some(0), "{stdout}");
    let proxy_server = format!("http://127.0.0.1:{}", proxy.port);
    for result in results.values() {
        assert_eq!(result["attempts"], 1, "{result}");
        // Both agents ended on the live proxy, without its credentials in what they report.
        assert_eq!(result["output"]["proxy"], proxy_server.as_str(), "{result}");
    }
    let seen: BTreeSet<String> = proxy.seen.lock().unwrap().iter().cloned().collect();
    let ran: BTreeSet<u64> = results
        .values()
        .map(|r| r["agent"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ran,
        BTreeSet::from([0, 1]),
        "both proxy sources must be exercised"
    );
    for agent in ran {
        assert!(seen.contains(&format!("ArmadaAgent/{agent}")), "{seen:?}");
    }
}

#[test]
fn the_browser_is_recycled_after_the_configured_number_of_jobs() {
    let _turn = turn();
    let agents = "targetted_agent,browser.recycle_after_jobs\n0,2\n";
    let jobs: String = (0..6).map(|index| format!("{index},whoami\n")).collect();
    let dir = project(agents, &format!("targetted_job,kind\n{jobs}"));
    let run = launch(dir.path(), &dir.path().join("r.jsonl"), &["--agents", "1"]);
    let run_id = run.run_id().to_owned();
    let (code, stdout, results) = finish(run);
    assert_eq!(code, Some(0), "{stdout}");
    // Each job's page replaces the last: tabs do not pile up.
    for result in results.values() {
        assert_eq!(result["output"]["open_pages"], 1, "{result}");
    }
    let mut launches: Vec<u64> = results
        .values()
        .map(|r| r["output"]["browser_launches"].as_u64().unwrap())
        .collect();
    launches.sort_unstable();
    assert_eq!(launches, vec![1, 1, 2, 2, 3, 3]);
    assert_nothing_left(&run_id);
}

fn xvfb_servers() -> usize {
    let output = Command::new("pgrep").args(["-x", "Xvfb"]).output().unwrap();
    String::from_utf8_lossy(&output.stdout).lines().count()
}

#[test]
fn a_visible_browser_without_a_display_gets_its_own_xvfb() {
    let _turn = turn();
    let before = xvfb_servers();
    let agents = "targetted_agent,browser.screen_visible\n0,true\n";
    let dir = project(agents, "targetted_job,kind\n0,whoami\n1,product\n");
    let run = launch(dir.path(), &dir.path().join("r.jsonl"), &["--agents", "1"]);
    let (code, stdout, results) = finish(run);
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(results[&0]["output"]["width"], 1280);
    assert_eq!(results[&1]["output"]["name"], "Product 1");
    let deadline = Instant::now() + Duration::from_secs(5);
    while xvfb_servers() > before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(xvfb_servers(), before, "the agent's Xvfb outlived it");
}

#[test]
fn a_chromium_that_hangs_at_start_is_killed_and_started_again() {
    let _turn = turn();
    let dir = tempfile::tempdir().unwrap();
    let chromium = ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
        .into_iter()
        .find(|path| Path::new(path).is_file())
        .expect("Chromium is installed");
    // The first start hangs without a word, as a Chromium starved of CPU or disk does.
    let wrapper = dir.path().join("chromium-hanging-once");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif mkdir '{hung}' 2>/dev/null; then echo $$ > '{hung}/pid'; exec sleep 600; fi\nexec {chromium} \"$@\"\n",
            hung = dir.path().join("hung").display(),
        ),
    )
    .unwrap();
    let mut permissions = std::fs::metadata(&wrapper).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&wrapper, permissions).unwrap();
    let agents = format!(
        "targetted_agent,browser.executable,browser.startup_timeout_secs\n0,{},2\n",
        wrapper.display()
    );
    let project = project(&agents, "targetted_job,kind\n0,whoami\n1,product\n");
    let run = launch(
        project.path(),
        &project.path().join("r.jsonl"),
        &["--agents", "1"],
    );
    let run_id = run.run_id().to_owned();
    let (code, stdout, results) = finish(run);
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(results[&0]["output"]["browser_launches"], 2, "{results:?}");
    assert_eq!(results[&1]["output"]["name"], "Product 1");
    let hung = std::fs::read_to_string(dir.path().join("hung/pid")).unwrap();
    let hung = PathBuf::from(format!("/proc/{}", hung.trim()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while hung.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!hung.exists(), "the start that hung was left running");
    assert_nothing_left(&run_id);
}

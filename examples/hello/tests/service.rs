//! `orchestrate serve`, the project's orchestrator over HTTP: launches by JSON, multipart and
//! the original `/bot/start`, the same plan as the CLI, 422 with nothing published, runs kept
//! apart, cancel, the bearer token, and the OpenAPI description held to the routes.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use armada::testing::binary::{self, ProjectCopy};
use serde_json::{Value, json};

const TOKEN: &str = "service-token";

/// A copy of the hello project.
fn project() -> ProjectCopy {
    ProjectCopy::of(Path::new(env!("CARGO_MANIFEST_DIR")))
}

/// `orchestrate serve` on a free port of 127.0.0.1, with a token; interrupted when dropped.
struct Service {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Service {
    fn start(project: &Path) -> Self {
        Self::start_with(project, &[])
    }

    fn start_with(project: &Path, args: &[&str]) -> Self {
        let mut child = binary::command(env!("CARGO_BIN_EXE_orchestrate"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--token",
                TOKEN,
                "--project",
            ])
            .arg(project)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let base = binary::announced_url(&mut child);
        Self {
            child,
            base,
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, String) {
        let response = request.bearer_auth(TOKEN).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn json(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let (status, text) = self.send(request).await;
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn post_json(&self, path: &str, body: Value) -> (u16, Value) {
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string());
        self.json(request).await
    }

    async fn post_form(&self, path: &str, parts: &[(&str, &str)]) -> (u16, Value) {
        let (content_type, body) = multipart(parts);
        self.post_bytes(path, &content_type, body).await
    }

    async fn post_bytes(&self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body);
        self.json(request).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.json(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// Asks to cancel the run; returns the answer's status and body.
    async fn cancel(&self, run_id: &str) -> (u16, Value) {
        self.post_json(&format!("/runs/{run_id}/cancel"), json!({}))
            .await
    }

    /// Waits until the run is no longer running; returns it.
    async fn finished(&self, run_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, run) = self.get(&format!("/runs/{run_id}")).await;
            assert_eq!(status, 200, "{run}");
            if run["status"] != "running" {
                return run;
            }
            assert!(Instant::now() < deadline, "run {run_id} did not end: {run}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Service {
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

/// A multipart/form-data body with these text parts (CSV parts carry a file name).
fn multipart(parts: &[(&str, &str)]) -> (String, Vec<u8>) {
    let boundary = "armada-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = String::new();
    for (name, value) in parts {
        body.push_str(&format!("--{boundary}\r\n"));
        if name.ends_with(".csv") || name.starts_with("data_") || name.starts_with("config") {
            body.push_str(&format!(
                "Content-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\n\r\n"
            ));
        } else {
            body.push_str(&format!(
                "Content-Disposition: form-data; name=\"{name}\"\r\n\r\n"
            ));
        }
        body.push_str(value);
        body.push_str("\r\n");
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    (
        format!("multipart/form-data; boundary={boundary}"),
        body.into_bytes(),
    )
}

const AGENT_CSV: &str = "targetted_agent,greeting\n0,Ciao\n1,Hej\n";
const JOB_CSV: &str = "targetted_job,name,number\n0,Lin,3\n4,Mo,9\n";

#[tokio::test]
async fn a_multipart_launch_plans_what_the_cli_plans_from_the_same_files() {
    let dir = project();
    let service = Service::start(dir.path());
    let (status, launched) = service
        .post_form(
            "/runs",
            &[
                ("tune", "local"),
                ("agents", "2"),
                ("jobs", "6"),
                ("data_agent.csv", AGENT_CSV),
                ("data_job.csv", JOB_CSV),
            ],
        )
        .await;
    assert_eq!(status, 201, "{launched}");
    assert_eq!(
        (launched["agents"].clone(), launched["jobs"].clone()),
        (json!(2), json!(6))
    );
    let run_id = launched["run_id"].as_str().unwrap().to_owned();
    let (status, plan) = service
        .send(
            service
                .http
                .get(format!("{}/runs/{run_id}/plan", service.base)),
        )
        .await;
    assert_eq!(status, 200, "{plan}");

    // The CLI, on a project holding the same files.
    let same = project();
    std::fs::write(same.path().join("config/data_agent.csv"), AGENT_CSV).unwrap();
    std::fs::write(same.path().join("config/data_job.csv"), JOB_CSV).unwrap();
    let cli = Command::new(env!("CARGO_BIN_EXE_orchestrate"))
        .args(["plan", "--agents", "2", "--jobs", "6", "--project"])
        .arg(same.path())
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert_eq!(plan, String::from_utf8(cli.stdout).unwrap());

    let run = service.finished(&run_id).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["counts"]["succeeded"], 6);
    let results = dir
        .path()
        .join(format!(".armada/runs/{run_id}/results.jsonl"));
    assert_eq!(std::fs::read_to_string(results).unwrap().lines().count(), 6);
}

#[tokio::test]
async fn a_bad_csv_gets_422_with_the_row_and_publishes_nothing() {
    let dir = project();
    let service = Service::start(dir.path());
    let (_, before) = service.get("/api/v1/runs").await;
    let (status, answer) = service
        .post_form(
            "/runs",
            &[("data_job.csv", "targetted_job,name\n0,Ada\nzero,Bob\n")],
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    let diagnostic = &answer["diagnostics"][0];
    assert_eq!(diagnostic["line"], 3, "{answer}");
    assert_eq!(diagnostic["field"], "targetted_job", "{answer}");
    assert!(
        diagnostic["file"]
            .as_str()
            .unwrap()
            .contains("data_job.csv"),
        "{answer}"
    );
    // The Launch form checks itself as it is filled in: the same 422, or the run it would be,
    // and neither starts anything.
    let (status, answer) = service
        .post_form(
            "/api/v1/launch/check",
            &[("data_job.csv", "targetted_job,name\n0,Ada\nzero,Bob\n")],
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["diagnostics"][0]["line"], 3, "{answer}");
    let (status, answer) = service
        .post_form(
            "/api/v1/launch/check",
            &[
                ("jobs", "4"),
                ("agents", "2"),
                ("data_job.csv", JOB_CSV),
                ("name", "x"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({ "agents": 2, "jobs": 4, "skipped_agent_rows": 1, "skipped_job_rows": 1 })
    );
    // JSON bodies are checked the same way, and so is what the script's types accept.
    let (status, answer) = service
        .post_json(
            "/runs",
            json!({ "data_job_csv": "targetted_job,number\n0,many\n" }),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["diagnostics"][0]["field"]
            .as_str()
            .unwrap()
            .contains("number"),
        "{answer}"
    );
    // A column nothing reads, and a key of the overrides nothing reads, name the key meant.
    let (status, answer) = service
        .post_json(
            "/runs",
            json!({
                "data_job_csv": "targetted_job,nmae\n0,Ada\n",
                "overrides": { "default_job_message": { "wrok_ms": 5 } },
            }),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    let messages: Vec<&str> = answer["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|diagnostic| diagnostic["message"].as_str().unwrap())
        .collect();
    assert!(
        messages.contains(&"`nmae` is not a field of the job payload; did you mean `name`?")
            && messages
                .contains(&"`wrok_ms` is not a field of the job payload; did you mean `work_ms`?"),
        "{answer}"
    );
    let (status, answer) = service.post_json("/runs", json!({ "agentz": 3 })).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("agentz"),
        "{answer}"
    );
    let (status, answer) = service
        .post_json("/runs", json!({ "tags": ["two words"] }))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("tag `two words`"),
        "{answer}"
    );
    // A 40-byte request for a hundred million jobs is refused by the service's limit, at once
    // and without the memory such a run would take.
    let idle_kb = binary::memory_kb(service.child.id(), "VmRSS");
    let asked = Instant::now();
    let (status, answer) = service
        .post_json("/runs", json!({ "jobs": 100_000_000 }))
        .await;
    let took = asked.elapsed();
    let peak_kb = binary::memory_kb(service.child.id(), "VmHWM");
    assert_eq!(status, 422, "{answer}");
    assert!(took < Duration::from_secs(2), "answered in {took:?}");
    assert!(
        peak_kb.saturating_sub(idle_kb) < 200 * 1024,
        "the peak RSS rose from {idle_kb} kB to {peak_kb} kB"
    );
    assert!(
        answer["diagnostics"][0]["message"]
            .as_str()
            .unwrap()
            .contains("more than this service launches in one run (1000000)"),
        "{answer}"
    );
    // A CSV that is not UTF-8 is refused as the CLI refuses it, not read with U+FFFD.
    let (content_type, body) = multipart(&[("data_job.csv", "targetted_job,name\n0,MARK\n")]);
    let at = body
        .windows(4)
        .position(|window| window == b"MARK")
        .unwrap();
    let body = [&body[..at], b"Ad\xffa".as_slice(), &body[at + 4..]].concat();
    let (status, answer) = service.post_bytes("/runs", &content_type, body).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("`data_job.csv` is not UTF-8"),
        "{answer}"
    );
    // A form over the size limit is refused as too large, naming the limit.
    let oversized = "x".repeat(armada::service::MAX_REQUEST_BYTES + 1024);
    let (status, answer) = service
        .post_form("/runs", &[("data_job.csv", oversized.as_str())])
        .await;
    drop(oversized);
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("256 MB"),
        "{answer}"
    );
    let (_, after) = service.get("/api/v1/runs").await;
    assert_eq!(before, after, "nothing was published");
    assert!(
        !dir.path().join(".armada/runs").exists()
            || std::fs::read_dir(dir.path().join(".armada/runs"))
                .unwrap()
                .next()
                .is_none()
    );
}

#[tokio::test]
async fn two_runs_launched_together_stay_apart() {
    let dir = project();
    let service = Service::start(dir.path());
    let launch = |jobs: u64, name: &'static str| {
        service.post_json(
            "/runs",
            json!({
                "jobs": jobs,
                "agents": 2,
                "overrides": { "default_job_message": { "name": name, "work_ms": 5 } },
                "data_agent_csv": "targetted_agent\n",
                "data_job_csv": "targetted_job\n",
            }),
        )
    };
    let ((first_status, first), (second_status, second)) =
        tokio::join!(launch(12, "first"), launch(7, "second"));
    assert_eq!(
        (first_status, second_status),
        (201, 201),
        "{first} {second}"
    );
    let first_id = first["run_id"].as_str().unwrap();
    let second_id = second["run_id"].as_str().unwrap();
    assert_ne!(first_id, second_id);
    for (run_id, jobs, name) in [(first_id, 12, "first"), (second_id, 7, "second")] {
        let run = service.finished(run_id).await;
        assert_eq!(run["jobs"], jobs);
        assert_eq!(run["counts"]["succeeded"], jobs, "{run}");
        let results = std::fs::read_to_string(
            dir.path()
                .join(format!(".armada/runs/{run_id}/results.jsonl")),
        )
        .unwrap();
        assert_eq!(results.lines().count() as u64, jobs);
        for line in results.lines() {
            let result: Value = serde_json::from_str(line).unwrap();
            assert!(
                result["output"]["text"].as_str().unwrap().contains(name),
                "{result}"
            );
        }
    }
}

#[tokio::test]
async fn bot_start_takes_the_original_parts() {
    let dir = project();
    let service = Service::start(dir.path());
    let run_id = "a1b2c3d4-0000-4000-8000-000000000001";
    // What the original front end sent: the template with placeholders resolved, its run id
    // and bundled code injected, plus the tune and both CSV files.
    let template = json!({
        "run_message": { "agents": 2, "jobs": 4, "max_attempts": 2, "run_id": run_id },
        "default_agent_message": { "greeting": "Salut", "style": { "uppercase": false, "suffix": "." }, "code": "print('hi')", "run_id": run_id },
        "default_job_message": { "name": "bot", "number": 5, "run_id": run_id },
    });
    let template = template.to_string();
    let parts = [
        ("configtemplate", template.as_str()),
        ("configtune", "{}"),
        ("data_job", "targetted_job,name\n1,Yan\n"),
        ("data_agent", "targetted_agent,greeting\n1,Hallo\n"),
        ("python_code", "print('ignored')"),
    ];
    let (status, launched) = service.post_form("/bot/start", &parts).await;
    assert_eq!(status, 201, "{launched}");
    assert_eq!(launched["run_id"], run_id);
    assert!(
        launched["warnings"][0]
            .as_str()
            .unwrap()
            .contains("python_code"),
        "{launched}"
    );
    let run = service.finished(run_id).await;
    assert_eq!(run["counts"]["succeeded"], 4, "{run}");
    let results = std::fs::read_to_string(
        dir.path()
            .join(format!(".armada/runs/{run_id}/results.jsonl")),
    )
    .unwrap();
    let texts: Vec<String> = results
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["output"]["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(texts.iter().any(|text| text.contains("Yan")), "{texts:?}");
    assert!(
        texts
            .iter()
            .any(|text| text.contains("Salut") || text.contains("Hallo")),
        "{texts:?}"
    );
    // The same run id again is another run: refused, and the first one's results stay.
    let (status, answer) = service.post_form("/bot/start", &parts).await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("exists already"),
        "{answer}"
    );
    let kept = std::fs::read_to_string(
        dir.path()
            .join(format!(".armada/runs/{run_id}/results.jsonl")),
    )
    .unwrap();
    assert_eq!(kept, results);
    let (status, answer) = service
        .post_form("/bot/start", &[("data_job", "targetted_job\n")])
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("configtemplate"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_spinning_every_core_leave_the_service_answering_and_cancel_whole() {
    let dir = project();
    let service = Service::start(dir.path());
    // Jobs 0 and 1 busy-loop for 30 s, within their limit: on 2 cores, every core is busy.
    let (status, launched) = service
        .post_json(
            "/runs",
            json!({ "jobs": 12, "agents": 2, "name": "spinning", "tags": ["load", "cpu"],
                    "overrides": { "run_message": { "job_timeout_secs": 60 } },
                    "data_job_csv": "targetted_job,spin_ms\n0,30000\n1,30000\n" }),
        )
        .await;
    assert_eq!(status, 201, "{launched}");
    let run_id = launched["run_id"].as_str().unwrap();
    let (_, shown) = service.get(&format!("/api/v1/runs/{run_id}")).await;
    assert_eq!(
        (&shown["name"], &shown["tags"]),
        (&json!("spinning"), &json!(["load", "cpu"])),
        "{shown}"
    );
    let asked = Instant::now();
    let mut slowest = Duration::ZERO;
    while asked.elapsed() < Duration::from_secs(5) {
        for path in [
            format!("/api/v1/runs/{run_id}"),
            format!("/api/v1/runs/{run_id}/jobs"),
            "/api/v1/runs".to_owned(),
        ] {
            let started = Instant::now();
            let (status, answer) = service.get(&path).await;
            assert_eq!(status, 200, "{path}: {answer}");
            slowest = slowest.max(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        slowest < Duration::from_secs(1),
        "the API took {slowest:?} to answer while scripts spun"
    );
    let (status, _) = service.cancel(run_id).await;
    assert_eq!(status, 202);
    // The spinning jobs do not end their attempts; the run ends after its 10 s grace all the
    // same.
    let run = service.finished(run_id).await;
    assert_eq!(run["status"], "canceled", "{run}");
    let counts = &run["counts"];
    let total: u64 = ["succeeded", "failed", "canceled", "abandoned"]
        .iter()
        .map(|state| counts[state].as_u64().unwrap())
        .sum();
    assert_eq!(total, 12, "every job has its final state: {run}");
}

#[tokio::test]
async fn cancel_over_http_stops_a_run() {
    let dir = project();
    let service = Service::start(dir.path());
    let (status, launched) = service
        .post_json(
            "/runs",
            json!({ "jobs": 400, "agents": 2, "overrides": { "default_job_message": { "work_ms": 50 } }, "data_job_csv": "targetted_job\n", "data_agent_csv": "targetted_agent\n" }),
        )
        .await;
    assert_eq!(status, 201, "{launched}");
    let run_id = launched["run_id"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, _) = service.cancel(run_id).await;
    assert_eq!(status, 202);
    let run = service.finished(run_id).await;
    assert_eq!(run["status"], "canceled", "{run}");
    assert!(run["counts"]["canceled"].as_u64().unwrap() > 0, "{run}");
    assert!(run["counts"]["succeeded"].as_u64().unwrap() < 400, "{run}");
    let (status, _) = service.post_json("/runs/not-a-run/cancel", json!({})).await;
    assert_eq!(status, 404, "no such run");
    // A run that ended is refused with how it ended.
    let (status, answer) = service.cancel(run_id).await;
    assert_eq!(status, 409, "{answer}");
}

/// The service's limits: more agents than it allows is 422, a run beyond the runs it lets go
/// on at once is 429 until one ends, and neither publishes anything.
#[tokio::test]
async fn launches_beyond_the_service_s_limits_are_refused_and_publish_nothing() {
    let dir = project();
    let service = Service::start_with(
        dir.path(),
        &["--max-agents", "2", "--max-running-runs", "1"],
    );
    let (status, answer) = service.post_json("/runs", json!({ "agents": 3 })).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(
        answer["diagnostics"][0]["field"], "run_message.agents",
        "{answer}"
    );
    let slow = json!({
        "jobs": 400, "agents": 2,
        "overrides": { "default_job_message": { "work_ms": 50 } },
        "data_job_csv": "targetted_job\n", "data_agent_csv": "targetted_agent\n"
    });
    let (status, launched) = service.post_json("/runs", slow.clone()).await;
    assert_eq!(status, 201, "{launched}");
    let run_id = launched["run_id"].as_str().unwrap();
    let (status, answer) = service.post_json("/runs", slow.clone()).await;
    assert_eq!(status, 429, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("the most this service allows"),
        "{answer}"
    );
    let (_, runs) = service.get("/api/v1/runs").await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1, "{runs}");
    // Once the run ends, its place is free again.
    let (status, _) = service.cancel(run_id).await;
    assert_eq!(status, 202);
    service.finished(run_id).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, answer) = service.post_json("/runs", slow.clone()).await;
        if status == 201 {
            break;
        }
        assert_eq!(status, 429, "{answer}");
        assert!(
            Instant::now() < deadline,
            "the ended run's place was never given back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `Secret` sent in a launch shows `***` on every route that could show it, and in errors
/// that quote it.
#[tokio::test]
async fn every_route_hides_a_secret() {
    const KEY: &str = "sk-live-route-9d41c7";
    let dir = project();
    let service = Service::start(dir.path());
    let keyed = json!({ "default_agent_message": { "api_key": KEY } });
    let (status, launched) = service
        .post_json(
            "/runs",
            json!({ "agents": 2, "jobs": 4, "overrides": keyed }),
        )
        .await;
    assert_eq!(status, 201, "{launched}");
    let run_id = launched["run_id"].as_str().unwrap();
    let run = service.finished(run_id).await;
    assert_eq!(run["status"], "completed", "{run}");
    let mut shown = Vec::new();
    for path in [
        format!("/runs/{run_id}"),
        format!("/runs/{run_id}/plan"),
        "/api/v1/runs".to_owned(),
        format!("/api/v1/runs/{run_id}"),
        format!("/api/v1/runs/{run_id}/jobs"),
        format!("/api/v1/runs/{run_id}/jobs/0"),
        format!("/api/v1/runs/{run_id}/jobs/0/events"),
        format!("/api/v1/runs/{run_id}/events"),
        format!("/api/v1/runs/{run_id}/agents"),
        format!("/api/v1/runs/{run_id}/failures"),
        format!("/api/v1/runs/{run_id}/outputs?format=jsonl"),
        format!("/api/v1/runs/{run_id}/outputs?format=csv"),
        format!("/api/v1/compare?a={run_id}&b={run_id}"),
    ] {
        let (status, body) = service.get(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
        let body = match body {
            Value::String(text) => text,
            json => json.to_string(),
        };
        assert!(!body.contains(KEY), "{path} shows the secret: {body}");
        shown.push(body);
    }
    assert!(
        shown[1].contains("\"api_key\":\"***\""),
        "the plan: {}",
        shown[1]
    );
    assert!(
        shown
            .iter()
            .any(|body| body.contains("checked with key ***"))
    );
    // An error that quotes the secret (here, as a wrong value for another field) hides it.
    let bad = json!({ "default_agent_message": { "api_key": KEY, "style": { "uppercase": KEY } } });
    let (status, answer) = service
        .post_json("/runs", json!({ "overrides": bad }))
        .await;
    assert_eq!(status, 422, "{answer}");
    assert!(!answer.to_string().contains(KEY), "{answer}");
    assert!(answer.to_string().contains("***"), "{answer}");
}

#[tokio::test]
async fn the_token_is_required_and_openapi_matches_the_routes() {
    let dir = project();
    let service = Service::start(dir.path());
    let anonymous = service
        .http
        .get(format!("{}/openapi.json", service.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let (status, spec) = service.get("/openapi.json").await;
    assert_eq!(status, 200);

    // The description served is the one checked in.
    let checked_in = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let pretty = serde_json::to_string_pretty(&spec).unwrap() + "\n";
    if std::env::var_os("ARMADA_BLESS").is_some() {
        std::fs::write(&checked_in, &pretty).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&checked_in).unwrap(),
        pretty,
        "docs/openapi.json is stale: run this test with ARMADA_BLESS=1 and review the diff"
    );

    // Every described operation is routed, and the description lists every route.
    let mut described = Vec::new();
    for (path, operations) in spec["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            described.push((method.clone(), path.clone()));
        }
    }
    described.sort();
    let mut routed: Vec<(String, String)> = armada::service::ROUTES
        .iter()
        .map(|(method, path)| ((*method).to_owned(), (*path).to_owned()))
        .collect();
    routed.sort();
    assert_eq!(described, routed);
    for (method, path) in &routed {
        let url = format!("{}{}", service.base, path.replace("{id}", "no-such-run"));
        let request = match method.as_str() {
            "get" => service.http.get(url),
            "post" => service
                .http
                .post(url)
                .header("content-type", "application/json")
                .body("{}"),
            other => panic!("unexpected method {other}"),
        };
        let (status, body) = service.send(request).await;
        // A route that exists answers for itself: 404 only with its own JSON error.
        assert_ne!(status, 405, "{method} {path}");
        if status == 404 {
            assert!(
                body.contains("\"error\""),
                "{method} {path} is not routed: {body}"
            );
        }
    }
}

#[tokio::test]
async fn the_standalone_monitor_launches_through_the_service() {
    use armada::monitor::server::Served;
    use armada::monitor::{Monitor, RemoteControl, Store};

    let dir = project();
    let store_url = format!("sqlite:{}", dir.path().join("shared.sqlite").display());
    let service = Service::start_with(dir.path(), &["--store", &store_url]);
    // A monitor of its own over the same store, as `armada-monitor --orchestrator URL` runs.
    let control = RemoteControl::new(&service.base, Some(TOKEN.into())).unwrap();
    let monitor = Monitor::new(
        Store::open(&store_url).await.unwrap(),
        Some(std::sync::Arc::new(control)),
    );
    let served = Served::start(monitor.clone(), "127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let get = |path: String| {
        let request = http.get(format!("{}{path}", served.url()));
        async move {
            let text = request.send().await.unwrap().text().await.unwrap();
            serde_json::from_str::<Value>(&text).unwrap()
        }
    };
    let launch = |parts: &[(&str, &str)]| {
        let (content_type, body) = multipart(parts);
        http.post(format!("{}/api/v1/launch", served.url()))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let info = get("/api/v1/launch".into()).await;
    assert_eq!(info["tunes"][0], "local", "{info}");
    let response = launch(&[
        ("agents", "1"),
        ("jobs", "3"),
        ("data_agent.csv", "targetted_agent\n"),
        ("data_job.csv", "targetted_job\n"),
    ])
    .await
    .unwrap();
    assert_eq!(response.status(), 201);
    let launched: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    let run_id = launched["run_id"].as_str().unwrap();
    // The service ran it; the monitor shows it from the shared store.
    let run = service.finished(run_id).await;
    assert_eq!(run["counts"]["succeeded"], 3, "{run}");
    let shown = get(format!("/api/v1/runs/{run_id}")).await;
    assert_eq!(shown["status"], "completed", "{shown}");
    // Problems found by the service come back through the monitor as diagnostics.
    let response = launch(&[("data_job.csv", "targetted_job\nx\n")])
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    monitor.close();
    served.stop().await.unwrap();
}

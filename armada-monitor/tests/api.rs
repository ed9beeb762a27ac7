//! The monitor's HTTP service end to end on loopback: ingest, REST, WebSocket, tokens and
//! bad input, and a bounded load test with four subscribed dashboards.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use armada_core::wire::{Attachment, Event, EventBatch, EventJob, EventKind, WIRE_VERSION};
use armada_core::{JobId, RunId};
use armada_monitor::Monitor;
use armada_monitor::model::NewRun;
use armada_monitor::server::Served;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "s3cret-token";

struct Service {
    served: Served,
    monitor: Monitor,
    http: reqwest::Client,
}

impl Service {
    async fn start() -> Self {
        let folder = tempfile::tempdir().unwrap().keep();
        let url = format!("sqlite:{}", folder.join("monitor.sqlite").display());
        let monitor = Monitor::open(&url).await.unwrap();
        let served = Served::start(
            monitor.clone(),
            "127.0.0.1:0".parse().unwrap(),
            Some(TOKEN.into()),
        )
        .await
        .unwrap();
        Self {
            served,
            monitor,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.served.url())
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.bearer_auth(TOKEN).send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(self.url(path))).await
    }

    async fn post(&self, path: &str, body: &impl serde::Serialize) -> (u16, Value) {
        let body = serde_json::to_vec(body).unwrap();
        let request = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body);
        self.send(request).await
    }

    async fn register(&self, jobs: u64) -> NewRun {
        let run = NewRun {
            id: RunId::new().to_string(),
            project: "api".into(),
            agents: 4,
            jobs,
            tune: Some("local".into()),
            relaunch_of: None,
            settings: json!({ "agents": 4, "redis_password": "pw" }),
            name: None,
            tags: Vec::new(),
        };
        let (status, body) = self.post("/runs", &run).await;
        assert_eq!(status, 201, "{body}");
        run
    }

    /// A single-use WebSocket ticket.
    async fn ticket(&self) -> String {
        let (status, body) = self.post("/ws/ticket", &json!({})).await;
        assert_eq!(status, 200, "{body}");
        body["ticket"].as_str().unwrap().to_owned()
    }

    async fn subscribe(&self, run: &str) -> WebSocket {
        let url = format!(
            "ws://{}/api/v1/ws?run={run}&ticket={}",
            self.served.addr(),
            self.ticket().await
        );
        let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        socket
    }
}

type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn job_event(run: &NewRun, kind: EventKind, agent: u32, job: u64) -> Event {
    Event {
        kind,
        at_ms: armada_core::wire::now_ms(),
        agent,
        job: Some(EventJob {
            id: JobId::of(&RunId::parse(&run.id).unwrap(), job),
            index: job,
            attempt: 1,
        }),
        message: Some(format!("{} of job {job}", kind.as_str())),
        data: match kind {
            EventKind::JobSucceeded => {
                Some(json!({ "duration_ms": 12.5, "output": { "job": job, "title": "t" } }))
            }
            EventKind::JobFailed => Some(json!({ "duration_ms": 3.0 })),
            _ => None,
        },
        input: None,
    }
}

fn batch(run: &NewRun, events: Vec<Event>) -> EventBatch {
    EventBatch {
        v: WIRE_VERSION,
        batch_id: uuid::Uuid::new_v4(),
        run_id: RunId::parse(&run.id).unwrap(),
        events,
    }
}

#[tokio::test]
async fn bad_input_gets_clear_4xx_and_changes_nothing() {
    let service = Service::start().await;
    let run = service.register(3).await;
    let good = batch(&run, vec![job_event(&run, EventKind::JobStarted, 0, 0)]);

    // Missing and wrong tokens.
    let response = service.http.get(service.url("/runs")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert!(body["error"].as_str().unwrap().contains("Bearer"), "{body}");
    let response = service
        .http
        .post(service.url("/events"))
        .bearer_auth("wrong")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&good).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // Malformed JSON, a wrong shape, an unknown run, an oversized body.
    let (status, body) = service
        .send(
            service
                .http
                .post(service.url("/events"))
                .header("content-type", "application/json")
                .body("{\"v\": 1, \"batch_id\": "),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].is_string(), "{body}");
    let (status, body) = service
        .post("/events", &json!({ "v": 1, "events": "nope" }))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("batch_id")
            || body["error"].as_str().unwrap().contains("events"),
        "{body}"
    );
    let mut unknown = good.clone();
    unknown.run_id = RunId::new();
    let (status, body) = service.post("/events", &unknown).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains(unknown.run_id.as_str())
    );
    let mut other_version = good.clone();
    other_version.v = 2;
    let (status, body) = service.post("/events", &other_version).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("wire version 2"),
        "{body}"
    );
    let mut huge = good.clone();
    huge.events[0].message = Some("x".repeat(17 * 1024 * 1024));
    let (status, _) = service.post("/events", &huge).await;
    assert_eq!(status, 413);
    let mut too_many = good.clone();
    too_many.events = vec![good.events[0].clone(); 10_001];
    let (status, body) = service.post("/events", &too_many).await;
    assert_eq!(status, 400, "{body}");
    let mut bad_file = job_event(&run, EventKind::Attachment, 0, 0);
    bad_file.data = Some(json!({ "name": "a.png", "content_type": "image/png" }));
    let (status, body) = service.post("/events", &batch(&run, vec![bad_file])).await;
    assert_eq!(status, 400, "{body}");

    // Bad queries and routes.
    let (status, body) = service
        .get(&format!("/runs/{}/jobs?status=done", run.id))
        .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("queued"), "{body}");
    let (status, _) = service
        .get(&format!("/runs/{}/jobs?after=abc", run.id))
        .await;
    assert_eq!(status, 400);
    let (status, _) = service
        .get(&format!("/runs/{}/jobs?limit=-1", run.id))
        .await;
    assert_eq!(status, 400);
    let (status, _) = service.get("/runs/nope").await;
    assert_eq!(status, 404);
    let (status, _) = service.get("/nothing-here").await;
    assert_eq!(status, 404);
    let (status, body) = service
        .post(
            &format!("/runs/{}/finish", run.id),
            &json!({ "status": "running" }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = service
        .post(
            "/runs",
            &json!({ "id": "../etc", "project": "p", "agents": 1, "jobs": 0 }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    // Jobs are a count: a list of them, as registrations once sent, is refused, naming it.
    let listed = json!({
        "id": RunId::new().to_string(), "project": "p", "agents": 1,
        "jobs": [{ "index": 0, "id": JobId::new().to_string() }],
    });
    let (status, body) = service.post("/runs", &listed).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("jobs"), "{body}");

    // Without the project's orchestrator, control answers 501 and says what to run.
    let (status, body) = service.get("/launch").await;
    assert_eq!(status, 501);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("orchestrator service"),
        "{body}"
    );
    let (status, _) = service
        .post(&format!("/runs/{}/cancel", run.id), &json!({}))
        .await;
    assert_eq!(status, 501);
    let (status, _) = service
        .post(
            &format!("/runs/{}/retry", run.id),
            &json!({ "failed": true }),
        )
        .await;
    assert_eq!(status, 501);

    // Nothing of the above changed the run.
    let (status, shown) = service.get(&format!("/runs/{}", run.id)).await;
    assert_eq!(status, 200);
    assert_eq!(shown["events"], 0);
    assert_eq!(shown["counts"]["queued"], 3);
    assert_eq!(shown["settings"]["redis_password"], "***");
    // And a good batch is stored once, however often it is sent.
    assert_eq!(
        service.post("/events", &good).await,
        (200, json!({ "stored": true }))
    );
    assert_eq!(
        service.post("/events", &good).await,
        (200, json!({ "stored": false }))
    );
    let (_, shown) = service.get(&format!("/runs/{}", run.id)).await;
    assert_eq!(shown["events"], 1);
}

#[tokio::test]
async fn rest_serves_runs_jobs_events_outputs_and_files() {
    let service = Service::start().await;
    let run = service.register(4).await;
    let mut events = Vec::new();
    for job in 0..4 {
        events.push(job_event(
            &run,
            EventKind::JobStarted,
            (job % 2) as u32,
            job,
        ));
        let end = if job == 3 {
            EventKind::JobFailed
        } else {
            EventKind::JobSucceeded
        };
        events.push(job_event(&run, end, (job % 2) as u32, job));
    }
    let mut shot = job_event(&run, EventKind::Attachment, 1, 3);
    shot.data = Some(
        serde_json::to_value(Attachment::new("screenshot.png", "image/png", b"PNGDATA")).unwrap(),
    );
    events.push(shot);
    assert_eq!(service.post("/events", &batch(&run, events)).await.0, 200);

    let (_, listed) = service.get("/runs?limit=10").await;
    assert_eq!(listed["runs"][0]["id"], run.id.as_str());
    let (status, timeline) = service.get(&format!("/runs/{}/timeline", run.id)).await;
    assert_eq!(status, 200, "{timeline}");
    let buckets = timeline["buckets"].as_array().unwrap();
    let sum = |field: &str| {
        buckets
            .iter()
            .map(|b| b[field].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!((sum("started"), sum("succeeded"), sum("failed")), (4, 3, 1));
    assert_eq!(
        timeline["durations"]["counts"].as_array().unwrap().len(),
        30
    );
    // A monitor without an orchestrator says so: its dashboard offers no launch or cancel.
    let (_, about) = service.get("/about").await;
    assert_eq!(
        about,
        json!({ "serves": "monitor", "run_id": null, "later": null })
    );
    let (_, page) = service
        .get(&format!("/runs/{}/jobs?status=succeeded&limit=2", run.id))
        .await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 2);
    let next = page["next"].as_str().unwrap().to_owned();
    let (_, rest) = service
        .get(&format!(
            "/runs/{}/jobs?status=succeeded&after={next}",
            run.id
        ))
        .await;
    assert_eq!(rest["jobs"][0]["index"], 2);
    assert!(rest["next"].is_null());
    let (_, failed) = service
        .get(&format!(
            "/runs/{}/jobs?status=failed,retrying&agent=1",
            run.id
        ))
        .await;
    assert_eq!(failed["jobs"][0]["index"], 3);
    let (_, job) = service.get(&format!("/runs/{}/jobs/3", run.id)).await;
    assert_eq!(job["job"]["status"], "failed");
    let seq = job["attachments"][0]["seq"].as_u64().unwrap();
    let response = service
        .http
        .get(service.url(&format!("/runs/{}/attachments/{seq}", run.id)))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "image/png");
    assert_eq!(response.headers()["content-security-policy"], "sandbox");
    assert_eq!(response.bytes().await.unwrap().as_ref(), b"PNGDATA");
    let (_, events) = service
        .get(&format!("/runs/{}/jobs/3/events", run.id))
        .await;
    assert_eq!(events["events"].as_array().unwrap().len(), 3);
    let (_, latest) = service
        .get(&format!("/runs/{}/events?latest=2", run.id))
        .await;
    assert_eq!(latest["events"][1]["seq"], 9);
    let (_, agents) = service.get(&format!("/runs/{}/agents", run.id)).await;
    assert_eq!(agents["agents"].as_array().unwrap().len(), 2);
    let (_, failures) = service.get(&format!("/runs/{}/failures", run.id)).await;
    assert_eq!(failures["failures"][0]["jobs"], 1);

    let (_, outputs) = service.get(&format!("/runs/{}/outputs", run.id)).await;
    assert_eq!(outputs["outputs"].as_array().unwrap().len(), 3);
    let response = service
        .http
        .get(service.url(&format!("/runs/{}/outputs?format=csv", run.id)))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(
        response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains(".csv")
    );
    let csv = response.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "job,attempt,at_ms,job,title");
    assert_eq!(lines.len(), 4);
    let response = service
        .http
        .get(service.url(&format!("/runs/{}/outputs?format=jsonl", run.id)))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let jsonl = response.text().await.unwrap();
    assert_eq!(jsonl.lines().count(), 3);
    assert!(
        jsonl
            .lines()
            .all(|line| serde_json::from_str::<Value>(line).is_ok())
    );

    let other = service.register(1).await;
    let (status, compared) = service
        .get(&format!("/compare?a={}&b={}", run.id, other.id))
        .await;
    assert_eq!(status, 200);
    assert_eq!(compared["a"]["success_rate"], 0.75);
    assert_eq!(compared["b"]["run"]["id"], other.id.as_str());

    let delete = || {
        service
            .http
            .delete(service.url(&format!("/runs/{}", run.id)))
            .bearer_auth(TOKEN)
            .send()
    };
    // A run that has not ended is not deleted: it would go on out of sight.
    let refused = delete().await.unwrap();
    assert_eq!(refused.status(), 409);
    let why: Value = serde_json::from_str(&refused.text().await.unwrap()).unwrap();
    assert!(why.to_string().contains("still running"), "{why}");
    assert_eq!(service.get(&format!("/runs/{}", run.id)).await.0, 200);
    let (status, _) = service
        .post(
            &format!("/runs/{}/finish", run.id),
            &json!({ "status": "canceled" }),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(delete().await.unwrap().status(), 204);
    assert_eq!(service.get(&format!("/runs/{}", run.id)).await.0, 404);

    // The dashboard itself is served from the binary.
    let page = service.http.get(service.served.url()).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("/assets/app.js"));
}

/// Reads a subscriber's messages until it has seen `events` distinct events of the run.
/// The indexes of a jobs page.
fn indexes(page: &Value) -> Vec<u64> {
    page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["index"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn jobs_are_sorted_searched_and_paged_by_cursor() {
    let service = Service::start().await;
    let run = service.register(6).await;
    let mut events = Vec::new();
    // Job 4 runs and job 5 has no row; the others end after these durations.
    for (job, kind, duration_ms) in [
        (0, "product", Some(30.0)),
        (1, "slow", Some(10.0)),
        (2, "product", Some(20.0)),
        (3, "product", None),
        (4, "slow", None),
    ] {
        let mut started = job_event(&run, EventKind::JobStarted, 0, job);
        let input = json!({ "kind": kind, "n": job }).to_string();
        started.input = Some(
            serde_json::value::RawValue::from_string(input)
                .unwrap()
                .into(),
        );
        events.push(started);
        let mut ended = match (job, duration_ms) {
            (3, _) => job_event(&run, EventKind::JobFailed, 0, job),
            (_, Some(_)) => job_event(&run, EventKind::JobSucceeded, 0, job),
            _ => continue,
        };
        if let (Some(data), Some(duration_ms)) = (&mut ended.data, duration_ms) {
            data["duration_ms"] = json!(duration_ms);
        }
        events.push(ended);
    }
    assert_eq!(service.post("/events", &batch(&run, events)).await.0, 200);
    let jobs = format!("/runs/{}/jobs", run.id);

    // Sorted by a column, pages go on from `cursor`; rows with no value, then jobs without a
    // row, come last.
    let mut seen = Vec::new();
    let mut query = "sort=duration&limit=2".to_owned();
    loop {
        let (status, page) = service.get(&format!("{jobs}?{query}")).await;
        assert_eq!(status, 200, "{page}");
        assert!(page.get("next").is_none(), "{page}");
        seen.extend(indexes(&page));
        match page["cursor"].as_str() {
            Some(cursor) => query = format!("sort=duration&limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, [3, 1, 2, 0, 4, 5]);
    let (_, page) = service.get(&format!("{jobs}?sort=duration&limit=2")).await;
    assert_eq!(page["cursor"], "10:1");
    let (_, page) = service
        .get(&format!("{jobs}?sort=duration&order=desc&status=succeeded"))
        .await;
    assert_eq!(indexes(&page), [0, 2, 1]);
    assert!(page["cursor"].is_null());
    // By index, down, pages go on from `after` as they always did.
    let (_, page) = service.get(&format!("{jobs}?order=desc&limit=2")).await;
    assert_eq!((indexes(&page), &page["next"]), (vec![5, 4], &json!("4")));
    let (_, page) = service
        .get(&format!("{jobs}?sort=index&order=desc&limit=2&after=4"))
        .await;
    assert_eq!(indexes(&page), [3, 2]);

    // Searches by input and output, with a filter and a sort.
    let (_, page) = service.get(&format!("{jobs}?input=kind:product")).await;
    assert_eq!(indexes(&page), [0, 2, 3]);
    let (_, page) = service
        .get(&format!(
            "{jobs}?input=kind:product&status=succeeded&sort=duration&order=desc"
        ))
        .await;
    assert_eq!(indexes(&page), [0, 2]);
    let (_, page) = service.get(&format!("{jobs}?input=n:4")).await;
    assert_eq!(indexes(&page), [4]);
    let (_, page) = service
        .get(&format!("{jobs}?output=job:1&input=kind:slow"))
        .await;
    assert_eq!(indexes(&page), [1]);

    // Bad parameters are named, with what they take.
    for (query, says) in [
        ("sort=name", "`sort=name`"),
        ("sort=name", "index, duration, attempts, started, finished"),
        ("order=up", "asc or desc"),
        ("sort=duration&cursor=abc", "`cursor=abc`"),
        ("sort=attempts&cursor=1.5:3", "`cursor=1.5:3`"),
        ("cursor=10:1", "`after`"),
        ("sort=started&after=3", "`cursor`"),
        ("input=a.b:1", "`input=a.b:1`"),
        ("input=kind", "KEY:VALUE"),
        ("output=:x", "`output=:x`"),
    ] {
        let (status, body) = service.get(&format!("{jobs}?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(says), "{query}: {error}");
    }
}

async fn collect_events(mut socket: WebSocket, events: u64) -> (BTreeSet<u64>, u64, u64) {
    let mut seen = BTreeSet::new();
    let mut duplicates = 0;
    let mut lagged = 0;
    while (seen.len() as u64) < events {
        let Some(message) = socket.next().await else {
            break;
        };
        let Message::Text(text) = message.unwrap() else {
            continue;
        };
        let message: Value = serde_json::from_str(&text).unwrap();
        match message["type"].as_str().unwrap() {
            "events" => {
                for event in message["events"].as_array().unwrap() {
                    if !seen.insert(event["seq"].as_u64().unwrap()) {
                        duplicates += 1;
                    }
                }
            }
            "lagged" => lagged += 1,
            _ => {}
        }
    }
    let _ = socket.close(None).await;
    (seen, duplicates, lagged)
}

#[tokio::test]
async fn websocket_pushes_changes_of_the_subscribed_run() {
    let service = Service::start().await;
    let run = service.register(2).await;
    let other = service.register(2).await;
    let mut socket = service.subscribe(&run.id).await;
    let mut list = {
        let url = format!(
            "ws://{}/api/v1/ws?ticket={}",
            service.served.addr(),
            service.ticket().await
        );
        tokio_tungstenite::connect_async(url).await.unwrap().0
    };
    // Without the token the upgrade is refused.
    let refused = tokio_tungstenite::connect_async(format!(
        "ws://{}/api/v1/ws?run={}",
        service.served.addr(),
        run.id
    ))
    .await;
    assert!(refused.is_err());

    service
        .post(
            "/events",
            &batch(&other, vec![job_event(&other, EventKind::JobStarted, 0, 0)]),
        )
        .await;
    service
        .post(
            "/events",
            &batch(&run, vec![job_event(&run, EventKind::JobStarted, 0, 1)]),
        )
        .await;
    let mut kinds = Vec::new();
    while kinds.len() < 3 {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("the subscribed run's changes arrive")
            .unwrap()
            .unwrap();
        let Message::Text(text) = message else {
            continue;
        };
        let message: Value = serde_json::from_str(&text).unwrap();
        assert_ne!(
            message["run_id"],
            other.id.as_str(),
            "another run's changes are not sent"
        );
        if message["type"] == "run" {
            assert_eq!(message["run"]["id"], run.id.as_str());
        }
        if message["type"] == "jobs" {
            assert_eq!(message["jobs"][0]["status"], "running");
            assert_eq!(message["jobs"][0]["index"], 1);
        }
        kinds.push(message["type"].as_str().unwrap().to_owned());
    }
    assert_eq!(kinds[..2], ["jobs", "events"]);
    assert_eq!(kinds[2], "run");
    // The runs list hears of run changes, not of events.
    let message = tokio::time::timeout(Duration::from_secs(5), list.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let message: Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
    assert_eq!(message["type"], "run");
    socket.send(Message::Close(None)).await.unwrap();
}

/// Four writers ingest 40,000 events (some batches twice) while four dashboards are
/// subscribed: the store holds each event once, and every dashboard sees every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_with_four_dashboards_loses_and_duplicates_nothing() {
    const WRITERS: u64 = 4;
    const BATCHES_PER_WRITER: u64 = 50;
    const EVENTS_PER_BATCH: u64 = 200;
    let total = WRITERS * BATCHES_PER_WRITER * EVENTS_PER_BATCH;
    let service = Service::start().await;
    let run = service.register(WRITERS * BATCHES_PER_WRITER).await;
    let dashboards: Vec<_> = futures::future::join_all((0..4).map(|_| service.subscribe(&run.id)))
        .await
        .into_iter()
        .map(|socket| tokio::spawn(collect_events(socket, total)))
        .collect();

    let started = std::time::Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let http = service.http.clone();
            let url = service.url("/events");
            let run = run.clone();
            tokio::spawn(async move {
                for number in 0..BATCHES_PER_WRITER {
                    let job = writer * BATCHES_PER_WRITER + number;
                    let events = (0..EVENTS_PER_BATCH)
                        .map(|_| job_event(&run, EventKind::Info, writer as u32, job))
                        .collect();
                    let batch = batch(&run, events);
                    let body = serde_json::to_vec(&batch).unwrap();
                    // Every fifth batch is sent twice, as a client does when an answer is lost.
                    let sends = if number % 5 == 0 { 2 } else { 1 };
                    for _ in 0..sends {
                        let response = http
                            .post(&url)
                            .bearer_auth(TOKEN)
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(response.status(), 200);
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let ingest_secs = started.elapsed().as_secs_f64();

    let (_, shown) = service.get(&format!("/runs/{}", run.id)).await;
    assert_eq!(shown["events"], total, "every event stored exactly once");
    let (_, last) = service
        .get(&format!("/runs/{}/events?latest=1", run.id))
        .await;
    assert_eq!(last["events"][0]["seq"], total);
    for dashboard in dashboards {
        let (seen, duplicates, lagged) = tokio::time::timeout(Duration::from_secs(60), dashboard)
            .await
            .expect("dashboards keep up within a minute")
            .unwrap();
        assert_eq!(duplicates, 0);
        assert_eq!(lagged, 0, "a dashboard fell behind");
        assert_eq!(seen, (1..=total).collect::<BTreeSet<_>>());
    }
    println!("ingested {total} events in {ingest_secs:.2}s with 4 dashboards subscribed");
    service.monitor.close();
}

#[test]
fn listening_beyond_loopback_needs_a_token() {
    let open: std::net::SocketAddr = "0.0.0.0:8400".parse().unwrap();
    let error = armada_monitor::server::require_token(open, None).unwrap_err();
    assert!(error.to_string().contains("bearer token"), "{error}");
    assert!(armada_monitor::server::require_token(open, Some("t")).is_ok());
    assert!(armada_monitor::server::require_token("127.0.0.1:1".parse().unwrap(), None).is_ok());
}

/// Status and body of a request sent as is (its own headers, no token added).
async fn send_raw(request: reqwest::RequestBuilder) -> (u16, String) {
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn pages_of_other_sites_cannot_use_the_service() {
    let service = Service::start().await;
    let run = service.register(2).await;
    let origin = format!("http://{}", service.served.addr());
    let cancel = service.url(&format!("/runs/{}/cancel", run.id));

    // A form or fetch from another site's page, and a body a cross-site form sends unasked.
    let (status, body) = send_raw(
        service
            .http
            .post(&cancel)
            .bearer_auth(TOKEN)
            .header("origin", "http://evil.example"),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("http://evil.example"), "{body}");
    let (status, body) = send_raw(
        service
            .http
            .post(&cancel)
            .bearer_auth(TOKEN)
            .header("content-type", "text/plain")
            .body("{}"),
    )
    .await;
    assert_eq!(status, 415, "{body}");
    assert!(body.contains("JSON or multipart"), "{body}");
    let (status, body) = service.get(&format!("/runs/{}", run.id)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "running", "nothing was canceled: {body}");

    // The service's own pages, and clients that are not browsers, pass; the scheme's case
    // does not matter.
    let (status, body) = send_raw(
        service
            .http
            .get(service.url("/runs"))
            .header("authorization", format!("bearer {TOKEN}"))
            .header("origin", &origin),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // The token goes in the header, never in a query.
    let (status, body) = send_raw(
        service
            .http
            .get(format!("{}?token={TOKEN}", service.url("/runs"))),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    let refused = tokio_tungstenite::connect_async(
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{}/api/v1/ws?ticket={}",
            service.served.addr(),
            service.ticket().await
        ))
        .map(|mut request| {
            request
                .headers_mut()
                .insert("origin", "http://evil.example".parse().unwrap());
            request
        })
        .unwrap(),
    )
    .await;
    assert!(
        refused.is_err(),
        "a WebSocket opened by another site's page is refused"
    );
}

#[tokio::test]
async fn a_service_without_a_token_answers_only_to_its_own_host_names() {
    let folder = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", folder.path().join("monitor.sqlite").display());
    let monitor = Monitor::open(&url).await.unwrap();
    let app = armada_monitor::server::app_with_hosts(
        monitor,
        None,
        vec!["armada.internal".into()],
        axum::Router::new(),
    );
    let served = Served::start_app(app, "127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let port = served.addr().port();
    let runs = format!("{}/api/v1/runs", served.url());
    for (host, expected) in [
        (format!("127.0.0.1:{port}"), 200),
        (format!("localhost:{port}"), 200),
        (format!("armada.internal:{port}"), 200),
        // A DNS-rebinding page: its browser sends the attacker's name.
        (format!("evil.example:{port}"), 403),
    ] {
        let (status, body) = send_raw(http.get(&runs).header("host", &host)).await;
        assert_eq!(status, expected, "{host}: {body}");
    }
    served.stop().await.unwrap();
}

#[tokio::test]
async fn a_websocket_ticket_opens_one_connection_and_the_token_stays_out_of_urls() {
    let service = Service::start().await;
    let addr = service.served.addr();
    let ticket = service.ticket().await;
    let first =
        tokio_tungstenite::connect_async(format!("ws://{addr}/api/v1/ws?ticket={ticket}")).await;
    assert!(first.is_ok(), "{:?}", first.err());
    let again =
        tokio_tungstenite::connect_async(format!("ws://{addr}/api/v1/ws?ticket={ticket}")).await;
    assert!(again.is_err(), "a ticket opens one connection");
    let token_in_url =
        tokio_tungstenite::connect_async(format!("ws://{addr}/api/v1/ws?token={TOKEN}")).await;
    assert!(token_in_url.is_err(), "the token is not taken from a URL");
    // A client that can set headers sends the token as everywhere else.
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{addr}/api/v1/ws"
        ))
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    assert!(tokio_tungstenite::connect_async(request).await.is_ok());
}

#[tokio::test]
async fn live_connections_are_capped() {
    let service = Service::start().await;
    let open = || {
        let mut request =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                format!("ws://{}/api/v1/ws", service.served.addr()),
            )
            .unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
        tokio_tungstenite::connect_async(request)
    };
    let mut sockets = Vec::new();
    for _ in 0..armada_monitor::server::MAX_WEBSOCKETS {
        sockets.push(open().await.unwrap().0);
    }
    match open().await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
        }
        other => panic!(
            "one connection over the cap was not refused: {:?}",
            other.map(|_| ())
        ),
    }
    // A closed connection frees its place.
    sockets.pop().unwrap().close(None).await.unwrap();
    let mut reopened = None;
    for _ in 0..50 {
        if let Ok((socket, _)) = open().await {
            reopened = Some(socket);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reopened.is_some(), "the freed place was not given again");
}

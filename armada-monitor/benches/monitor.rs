//! The monitor's ingest and paging, next to plain sqlx doing the same writes and reads on the
//! same database in the same process (the ratio is what counts on a shared machine).
//!
//! - ingest: 100,000 events in batches of 1,000 through `Monitor::ingest` (what embedded runs
//!   and the HTTP route call) while four WebSocket dashboards are subscribed to the run,
//!   against a plain multi-row `INSERT` of the same rows, one transaction per batch;
//! - a page of 50 jobs from a run of 100,000 jobs, over HTTP and straight from the store,
//!   against the plain indexed `SELECT`;
//! - the first page of that run sorted by duration, and a search of its inputs for one job,
//!   over HTTP, against the plain `SELECT … ORDER BY … LIMIT` and `EXISTS` on the events that
//!   a person would write (neither has an index of its own: a top-N sort, and a walk of the
//!   run's jobs through the events' job index).
//!
//! SQLite always; PostgreSQL with the `postgres` feature (`ARMADA_POSTGRES_URL`, default the
//! local `test` database). Run by `cargo xtask bench`.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use armada_core::wire::{Event, EventBatch, EventJob, EventKind, WIRE_VERSION};
use armada_core::{JobId, RunId};
use armada_monitor::model::{Finish, JobFilter, JobState, NewRun, RunState};
use armada_monitor::server::Served;
use armada_monitor::{Monitor, Store};
use futures::StreamExt;
use serde_json::json;
use sqlx::{AssertSqlSafe, Executor};

const EVENTS: u64 = 100_000;
const PER_BATCH: u64 = 1_000;
const PAGE_JOBS: u64 = 100_000;
const PAGE_SAMPLES: usize = 200;
/// Samples of the sorted page and of the search, which read the whole run.
const SCAN_SAMPLES: usize = 20;

/// Ends a measured run and deletes it, as a dashboard's user would (a running run is kept).
async fn end_and_delete(monitor: &Monitor, run_id: &str) {
    let end = Finish {
        status: RunState::Completed,
        jobs: Vec::new(),
    };
    monitor.finish_run(run_id, &end).await.unwrap();
    monitor.delete_run(run_id).await.unwrap();
}

fn new_run(jobs: u64) -> NewRun {
    NewRun {
        id: RunId::new().to_string(),
        project: "bench".into(),
        agents: 16,
        jobs,
        tune: None,
        relaunch_of: None,
        settings: json!({}),
        name: None,
        tags: Vec::new(),
    }
}

/// The events of `jobs` jobs, each started, with a step, and succeeded (or failed, one in ten).
fn lifecycle_events(run: &NewRun, jobs: u64) -> Vec<Event> {
    let mut events = Vec::with_capacity(jobs as usize * 4);
    let run_id = RunId::parse(&run.id).unwrap();
    for index in 0..jobs {
        let job = EventJob {
            id: JobId::of(&run_id, index),
            index,
            attempt: 1,
        };
        let agent = (index % 16) as u32;
        let event = |kind, message: Option<&str>, data| Event {
            kind,
            at_ms: 1_800_000_000_000 + index,
            agent,
            job: Some(job),
            message: message.map(str::to_owned),
            data,
            input: None,
        };
        // As agents send it: the job's input rides on its start event.
        let input = format!(r#"{{"kind":"product","id":{index}}}"#);
        events.push(Event {
            input: Some(
                serde_json::value::RawValue::from_string(input)
                    .unwrap()
                    .into(),
            ),
            ..event(EventKind::JobStarted, None, None)
        });
        events.push(event(EventKind::Success, Some("page loaded"), None));
        if index % 10 == 9 {
            events.push(event(
                EventKind::JobFailed,
                Some("selector #price not found"),
                Some(json!({ "duration_ms": 812.5 })),
            ));
        } else {
            let output = json!({ "name": format!("Product {index}"), "price": "€3.99", "sku": format!("SKU-{index:06}") });
            events.push(event(
                EventKind::JobSucceeded,
                None,
                Some(json!({ "duration_ms": 640.25, "output": output })),
            ));
        }
        events.push(event(EventKind::Info, Some("closing tab"), None));
    }
    events
}

fn batches(run: &NewRun, events: Vec<Event>) -> Vec<EventBatch> {
    events
        .chunks(PER_BATCH as usize)
        .map(|chunk| EventBatch {
            v: WIRE_VERSION,
            batch_id: uuid::Uuid::new_v4(),
            run_id: RunId::parse(&run.id).unwrap(),
            events: chunk.to_vec(),
        })
        .collect()
}

/// Four dashboards following the run over WebSocket; each returns how many events it saw.
async fn dashboards(served: &Served, run: &str) -> Vec<tokio::task::JoinHandle<u64>> {
    let mut handles = Vec::new();
    for _ in 0..4 {
        let url = format!("ws://{}/api/v1/ws?run={run}", served.addr());
        let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        handles.push(tokio::spawn(async move {
            let mut seen = 0;
            while let Some(Ok(message)) = socket.next().await {
                if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                    let message: serde_json::Value = serde_json::from_str(&text).unwrap();
                    if message["type"] == "events" {
                        seen += message["events"].as_array().unwrap().len() as u64;
                        if seen >= EVENTS {
                            break;
                        }
                    }
                }
            }
            seen
        }));
    }
    handles
}

/// The plain loop: the same rows, one multi-row INSERT per 100 rows, one transaction a batch.
/// Placeholders are `?` on SQLite (sqlx finds a numbered one by a linear search of its name)
/// and `$n` on PostgreSQL.
async fn plain_ingest(pool: &sqlx::AnyPool, sqlite: bool, batches: &[EventBatch]) -> Duration {
    let mark = |number: usize| {
        if sqlite {
            "?".to_owned()
        } else {
            format!("${number}")
        }
    };
    pool.execute("DROP TABLE IF EXISTS bench_plain_events")
        .await
        .unwrap();
    pool.execute(
        "CREATE TABLE bench_plain_events (run_id TEXT NOT NULL, seq BIGINT NOT NULL, \
         job_idx BIGINT, attempt BIGINT, agent BIGINT NOT NULL, kind TEXT NOT NULL, \
         at_ms BIGINT NOT NULL, message TEXT, data TEXT, PRIMARY KEY (run_id, seq))",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut seq = 0_i64;
    for batch in batches {
        let mut tx = pool.begin().await.unwrap();
        for chunk in batch.events.chunks(100) {
            let mut sql = String::from("INSERT INTO bench_plain_events VALUES ");
            for row in 0..chunk.len() {
                if row > 0 {
                    sql.push(',');
                }
                let base = row * 9;
                let marks: Vec<String> = (1..=9).map(|column| mark(base + column)).collect();
                sql.push_str(&format!("({})", marks.join(", ")));
            }
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for event in chunk {
                seq += 1;
                query = query
                    .bind(batch.run_id.as_str())
                    .bind(seq)
                    .bind(event.job.map(|job| job.index as i64))
                    .bind(event.job.map(|job| i64::from(job.attempt)))
                    .bind(i64::from(event.agent))
                    .bind(event.kind.as_str())
                    .bind(event.at_ms as i64)
                    .bind(event.message.clone())
                    // The input kept as the text it came as, the event's data when it has none.
                    .bind(
                        event
                            .data
                            .as_ref()
                            .map(|data| data.to_string())
                            .or_else(|| event.input.as_ref().map(|input| input.get().to_owned())),
                    );
            }
            query.execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    let elapsed = started.elapsed();
    pool.execute("DROP TABLE bench_plain_events").await.unwrap();
    elapsed
}

fn quantiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)].as_secs_f64() * 1000.0
    };
    (at(0.5), at(0.99))
}

async fn measure(name: &str, url: &str) -> Vec<String> {
    let monitor = Monitor::open(url).await.unwrap();
    let served = Served::start(monitor.clone(), "127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    let mut lines = Vec::new();

    // Ingest with four dashboards subscribed.
    let jobs = EVENTS / 4;
    let run = new_run(jobs);
    monitor.register_run(&run).await.unwrap();
    let batches = batches(&run, lifecycle_events(&run, jobs));
    let watchers = dashboards(&served, &run.id).await;
    let started = Instant::now();
    for batch in &batches {
        assert!(monitor.ingest(batch).await.unwrap());
    }
    let armada = started.elapsed();
    for watcher in watchers {
        let seen = tokio::time::timeout(Duration::from_secs(120), watcher)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seen, EVENTS, "every dashboard saw every event");
    }
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&if url.starts_with("sqlite:") {
            format!("{url}?mode=rwc")
        } else {
            url.to_owned()
        })
        .await
        .unwrap();
    if url.starts_with("sqlite:") {
        pool.execute("PRAGMA journal_mode = WAL").await.unwrap();
        pool.execute("PRAGMA synchronous = NORMAL").await.unwrap();
    }
    let plain = plain_ingest(&pool, url.starts_with("sqlite:"), &batches).await;
    let rate = |elapsed: Duration| EVENTS as f64 / elapsed.as_secs_f64();
    lines.push(format!(
        "| {name} | ingest, 4 dashboards subscribed | {:.0} events/s | {:.0} events/s | {:.2} |",
        rate(armada),
        rate(plain),
        rate(armada) / rate(plain)
    ));
    end_and_delete(&monitor, &run.id).await;

    // A page of jobs from a run of 100,000.
    let big = new_run(PAGE_JOBS);
    let registered = Instant::now();
    monitor.register_run(&big).await.unwrap();
    let register_secs = registered.elapsed().as_secs_f64();
    for batch in batches_for_page_run(&big) {
        monitor.ingest(&batch).await.unwrap();
    }
    let store: &Store = monitor.store();
    let failed = JobFilter {
        states: vec![JobState::Failed],
        ..JobFilter::default()
    };
    let http = reqwest::Client::new();
    let mut through_http = Vec::new();
    let mut through_store = Vec::new();
    let mut plain_select = Vec::new();
    for sample in 0..PAGE_SAMPLES {
        let after = (sample as u64 * 487) % (PAGE_JOBS - 100);
        let started = Instant::now();
        let response = http
            .get(format!(
                "{}/api/v1/runs/{}/jobs?status=failed&after={after}&limit=50",
                served.url(),
                big.id
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let _ = response.bytes().await.unwrap();
        through_http.push(started.elapsed());
        let started = Instant::now();
        let page = store.jobs(&big.id, &failed, Some(after), 50).await.unwrap();
        through_store.push(started.elapsed());
        assert_eq!(page.items.len(), 50);
        let started = Instant::now();
        let rows = sqlx::query(
            "SELECT * FROM armada_jobs WHERE run_id = $1 AND idx > $2 AND status = $3 ORDER BY idx LIMIT $4",
        )
        .bind(&big.id)
        .bind(after as i64)
        .bind("failed")
        .bind(50_i64)
        .fetch_all(&pool)
        .await
        .unwrap();
        plain_select.push(started.elapsed());
        assert_eq!(rows.len(), 50);
    }
    let (http_p50, http_p99) = quantiles(through_http);
    let (store_p50, store_p99) = quantiles(through_store);
    let (plain_p50, plain_p99) = quantiles(plain_select);
    lines.push(format!(
        "| {name} | page of 50 failed jobs of 100,000, over HTTP | p50 {http_p50:.2} ms, p99 {http_p99:.2} ms | p50 {plain_p50:.2} ms, p99 {plain_p99:.2} ms | {:.2} |",
        plain_p50 / http_p50
    ));
    lines.push(format!(
        "| {name} | same page, from the store | p50 {store_p50:.2} ms, p99 {store_p99:.2} ms | p50 {plain_p50:.2} ms, p99 {plain_p99:.2} ms | {:.2} |",
        plain_p50 / store_p50
    ));
    lines.push(format!(
        "| {name} | register a run of 100,000 jobs | {register_secs:.2} s | | |"
    ));
    lines.extend(
        sorted_and_searched(name, &served, &pool, &big.id, url.starts_with("sqlite:")).await,
    );
    end_and_delete(&monitor, &big.id).await;
    pool.close().await;
    monitor.close();
    served.stop().await.unwrap();
    lines
}

/// The first page of the run sorted by duration, longest first, and a search of its inputs
/// for one job (`id`, a number), over HTTP, each next to the plain query.
async fn sorted_and_searched(
    name: &str,
    served: &Served,
    pool: &sqlx::AnyPool,
    run_id: &str,
    sqlite: bool,
) -> Vec<String> {
    let http = reqwest::Client::new();
    let get = |path: String| {
        let request = http.get(format!("{}/api/v1/runs/{run_id}/jobs?{path}", served.url()));
        async move {
            let started = Instant::now();
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            let body: serde_json::Value =
                serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
            (
                started.elapsed(),
                body["jobs"].as_array().map_or(0, Vec::len),
            )
        }
    };
    let input_id = if sqlite {
        "json_extract(e.data, '$.input.id')"
    } else {
        "(e.data::jsonb) -> 'input' ->> 'id'"
    };
    let plain_search = format!(
        "SELECT j.* FROM armada_jobs j WHERE j.run_id = $1 AND EXISTS (SELECT 1 FROM \
         armada_events e WHERE e.run_id = j.run_id AND e.job_idx = j.idx AND e.kind = \
         'job_started' AND {input_id} = $2) ORDER BY j.idx LIMIT 51"
    );
    let (mut sorted, mut plain_sorted, mut searched, mut plain_searched) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for sample in 0..SCAN_SAMPLES {
        let (took, found) = get("sort=duration&order=desc&limit=50".into()).await;
        assert_eq!(found, 50);
        sorted.push(took);
        let started = Instant::now();
        let rows = sqlx::query(
            "SELECT * FROM armada_jobs WHERE run_id = $1 ORDER BY duration_ms DESC NULLS LAST, idx \
             LIMIT 51",
        )
        .bind(run_id)
        .fetch_all(pool)
        .await
        .unwrap();
        plain_sorted.push(started.elapsed());
        assert_eq!(rows.len(), 51);
        // Spread over the run: a search walks the jobs up to the one it finds.
        let wanted = (sample as u64 * 4_999 + 2_500) % PAGE_JOBS;
        let (took, found) = get(format!("input=id:{wanted}&limit=50")).await;
        assert_eq!(found, 1);
        searched.push(took);
        let started = Instant::now();
        let query = sqlx::query(AssertSqlSafe(plain_search.clone())).bind(run_id);
        let query = if sqlite {
            query.bind(wanted as i64)
        } else {
            query.bind(wanted.to_string())
        };
        let rows = query.fetch_all(pool).await.unwrap();
        plain_searched.push(started.elapsed());
        assert_eq!(rows.len(), 1);
    }
    let line = |what: &str, armada: Vec<Duration>, plain: Vec<Duration>| {
        let ((p50, p99), (plain_p50, plain_p99)) = (quantiles(armada), quantiles(plain));
        format!(
            "| {name} | {what}, over HTTP | p50 {p50:.2} ms, p99 {p99:.2} ms | p50 {plain_p50:.2} ms, p99 {plain_p99:.2} ms | {:.2} |",
            plain_p50 / p50
        )
    };
    vec![
        line(
            "first page of 100,000 jobs by duration, longest first",
            sorted,
            plain_sorted,
        ),
        line(
            "search of 100,000 jobs' inputs for one job",
            searched,
            plain_searched,
        ),
    ]
}

/// Every job of the page run ends, one in ten failed, in batches of 1,000 events.
fn batches_for_page_run(run: &NewRun) -> Vec<EventBatch> {
    batches(run, lifecycle_events(run, PAGE_JOBS))
}

#[tokio::main]
async fn main() {
    let folder = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite:{}", folder.path().join("bench.sqlite").display());
    let mut lines = vec![
        "| store | what | armada | plain sqlx | armada / plain |".to_owned(),
        "|---|---|---:|---:|---:|".to_owned(),
    ];
    lines.extend(measure("SQLite", &sqlite).await);
    #[cfg(feature = "postgres")]
    {
        let url = std::env::var("ARMADA_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        lines.extend(measure("PostgreSQL", &url).await);
    }
    println!(
        "\nmonitor: {EVENTS} events in batches of {PER_BATCH}; pages of 50 jobs, {PAGE_SAMPLES} samples\n"
    );
    for line in lines {
        println!("{line}");
    }
}

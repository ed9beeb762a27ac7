//! The store conformance suite: every test runs against SQLite and, with the `postgres`
//! feature, against PostgreSQL (`ARMADA_POSTGRES_URL`, default the local `test` database),
//! and with the `mssql` feature against SQL Server when `ARMADA_MSSQL_URL` is set
//! (`mssql://USER:PASSWORD@HOST:PORT/DATABASE[?trust_server_certificate=true]`). No SQL
//! Server can run on the machines this was written on: without the variable each SQL Server
//! test says so and returns, which is the one documented exception to "every test runs".
#![allow(clippy::unwrap_used)]

use armada_core::wire::{Attachment, Event, EventBatch, EventJob, EventKind, WIRE_VERSION};
use armada_core::{JobId, RunId};
use armada_monitor::model::{
    EventFilter, Finish, FinishedJob, Job, JobCursor, JobFilter, JobSort, JobState, NewRun,
    PayloadMatch, RunState, SortOrder,
};
use armada_monitor::{Error, Store};
use serde_json::json;

/// A run registered in `store` with `jobs` queued jobs.
async fn new_run(store: &Store, jobs: u64) -> NewRun {
    let run = NewRun {
        id: RunId::new().to_string(),
        project: "conformance".into(),
        agents: 2,
        jobs,
        tune: Some("local".into()),
        relaunch_of: None,
        settings: json!({
            "agents": 2,
            "proxy": { "url": "http://user:hunter2@proxy:8080", "password": "hunter2" },
            "api_token": "abc"
        }),
        name: Some(" nightly prices ".into()),
        tags: vec!["prices".into(), "nightly".into(), "prices".into()],
    };
    store.register_run(&run, 1_000).await.unwrap();
    run
}

fn batch(run: &NewRun, events: Vec<Event>) -> EventBatch {
    EventBatch {
        v: WIRE_VERSION,
        batch_id: uuid::Uuid::new_v4(),
        run_id: RunId::parse(&run.id).unwrap(),
        events,
    }
}

fn event(run: &NewRun, kind: EventKind, agent: u32, job: u64, attempt: u32) -> Event {
    Event {
        kind,
        at_ms: 2_000 + job * 10 + u64::from(attempt),
        agent,
        job: Some(EventJob {
            id: job_id(run, job),
            index: job,
            attempt,
        }),
        message: None,
        data: None,
        input: None,
    }
}

/// The id the orchestrator gives job `index` of `run`.
fn job_id(run: &NewRun, index: u64) -> JobId {
    JobId::of(&RunId::parse(&run.id).unwrap(), index)
}

fn with(mut event: Event, message: Option<&str>, data: Option<serde_json::Value>) -> Event {
    event.message = message.map(str::to_owned);
    event.data = data;
    event
}

/// Job `job` runs once on `agent` and ends as `kind` after `duration_ms`.
fn lifecycle(run: &NewRun, agent: u32, job: u64, end: EventKind, duration_ms: f64) -> Vec<Event> {
    let ended = match end {
        EventKind::JobSucceeded => with(
            event(run, end, agent, job, 1),
            None,
            Some(
                json!({ "duration_ms": duration_ms, "output": { "title": format!("page {job}"), "price": if job.is_multiple_of(2) { json!(9.5) } else { json!(null) } } }),
            ),
        ),
        _ => with(
            event(run, end, agent, job, 1),
            Some(if job.is_multiple_of(3) {
                "timeout"
            } else {
                "not found"
            }),
            Some(json!({ "duration_ms": duration_ms })),
        ),
    };
    vec![
        event(run, EventKind::JobStarted, agent, job, 1),
        with(
            event(run, EventKind::Success, agent, job, 1),
            Some("page loaded"),
            None,
        ),
        ended,
    ]
}

async fn register_refuses_a_second_run_and_redacts(store: Store) {
    let run = new_run(&store, 5).await;
    let mut again = run.clone();
    again.jobs = 2;
    let refused = store.register_run(&again, 9_999).await;
    assert!(matches!(refused, Err(Error::Conflict(_))), "{refused:?}");
    let shown = store.run(&run.id, 61_000).await.unwrap();
    assert_eq!(shown.jobs, 5);
    // The name is trimmed and a tag given twice is kept once.
    assert_eq!(shown.name.as_deref(), Some("nightly prices"));
    assert_eq!(shown.tags, ["prices", "nightly"]);
    let mut badly_tagged = run.clone();
    badly_tagged.id = RunId::new().to_string();
    badly_tagged.tags = vec!["two words".into()];
    let refused = store.register_run(&badly_tagged, 9_999).await;
    assert!(
        matches!(&refused, Err(Error::Invalid(why)) if why.contains("tag `two words`")),
        "{refused:?}"
    );
    assert_eq!(shown.counts.queued, 5);
    assert_eq!(
        shown.created_ms, 1_000,
        "a second registration changes nothing"
    );
    assert_eq!(shown.status, RunState::Running);
    let settings = shown.settings.to_string();
    assert!(!settings.contains("hunter2"), "{settings}");
    assert!(!settings.contains("abc"), "{settings}");
    assert_eq!(shown.settings["proxy"]["url"], "http://user:***@proxy:8080");
    assert_eq!(shown.settings["agents"], 2);
}

async fn ingest_tracks_jobs_and_is_idempotent(store: Store) {
    let run = new_run(&store, 4).await;
    let mut events = lifecycle(&run, 0, 0, EventKind::JobSucceeded, 120.0);
    events.extend(lifecycle(&run, 1, 1, EventKind::JobFailed, 80.0));
    events.push(event(&run, EventKind::JobStarted, 1, 2, 1));
    let first = batch(&run, events);
    let ingested = store.ingest(&first).await.unwrap();
    assert!(ingested.stored);
    assert_eq!(
        ingested
            .events
            .iter()
            .map(|event| event.seq)
            .collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    assert_eq!(ingested.jobs.len(), 3);

    let again = store.ingest(&first).await.unwrap();
    assert!(!again.stored, "a batch id seen before is not stored again");
    let shown = store.run(&run.id, 3_000).await.unwrap();
    assert_eq!(shown.events, 7);
    assert_eq!(
        (
            shown.counts.succeeded,
            shown.counts.failed,
            shown.counts.running,
            shown.counts.queued
        ),
        (1, 1, 1, 1)
    );

    let (job, _) = store.job(&run.id, 0).await.unwrap();
    assert_eq!(job.status, JobState::Succeeded);
    assert_eq!(job.duration_ms, Some(120.0));
    assert_eq!(job.agent, Some(0));
    assert_eq!(job.attempts, 1);
    assert!(job.error.is_none());
    let (job, _) = store.job(&run.id, 1).await.unwrap();
    assert_eq!(job.status, JobState::Failed);
    assert_eq!(job.error.as_deref(), Some("not found"));

    // A retry, then success on another agent: the latest attempt wins, the error clears.
    let retry = batch(
        &run,
        vec![
            with(
                event(&run, EventKind::Retrying, 1, 2, 1),
                Some("net::ERR_TIMED_OUT"),
                Some(json!({ "delay_ms": 10, "duration_ms": 5.0 })),
            ),
            event(&run, EventKind::JobStarted, 0, 2, 2),
        ],
    );
    store.ingest(&retry).await.unwrap();
    let (job, _) = store.job(&run.id, 2).await.unwrap();
    assert_eq!(
        (job.status, job.attempts, job.agent),
        (JobState::Running, 2, Some(0))
    );
    // A late event of attempt 1 does not take the job back.
    let late = batch(
        &run,
        vec![with(
            event(&run, EventKind::Info, 1, 2, 1),
            Some("late"),
            None,
        )],
    );
    store.ingest(&late).await.unwrap();
    let (job, _) = store.job(&run.id, 2).await.unwrap();
    assert_eq!((job.status, job.attempts), (JobState::Running, 2));
    // Nor does a stray event of the attempt that ended a job (a sender replaying one).
    let stray = batch(
        &run,
        vec![with(
            event(&run, EventKind::Retrying, 1, 0, 1),
            Some("stray"),
            None,
        )],
    );
    store.ingest(&stray).await.unwrap();
    let (job, _) = store.job(&run.id, 0).await.unwrap();
    assert_eq!((job.status, job.attempts), (JobState::Succeeded, 1));
}

async fn bad_batches_change_nothing(store: Store) {
    let run = new_run(&store, 2).await;
    let mut unknown = batch(&run, lifecycle(&run, 0, 0, EventKind::JobSucceeded, 1.0));
    unknown.run_id = RunId::new();
    assert!(matches!(
        store.ingest(&unknown).await,
        Err(Error::UnknownRun(_))
    ));

    let mut bad_file = event(&run, EventKind::Attachment, 0, 0, 1);
    bad_file.data = Some(json!({ "name": "x.png", "content_type": "image/png", "base64": "%%%" }));
    let mut events = lifecycle(&run, 0, 0, EventKind::JobSucceeded, 1.0);
    events.push(bad_file);
    let rejected = store.ingest(&batch(&run, events)).await;
    assert!(
        matches!(rejected, Err(Error::Invalid(ref why)) if why.contains("event 3")),
        "{rejected:?}"
    );

    let mut old = batch(&run, vec![event(&run, EventKind::JobStarted, 0, 0, 1)]);
    old.v = 99;
    assert!(matches!(store.ingest(&old).await, Err(Error::Invalid(_))));

    let shown = store.run(&run.id, 3_000).await.unwrap();
    assert_eq!(shown.events, 0, "a rejected batch stores nothing");
    assert_eq!(shown.counts.queued, 2);
    let page = store
        .events(&run.id, &EventFilter::default(), None, 50)
        .await
        .unwrap();
    assert!(page.items.is_empty());
}

async fn jobs_are_keyset_paged_and_filtered(store: Store) {
    let run = new_run(&store, 250).await;
    let mut events = Vec::new();
    for job in 0..200_u64 {
        let end = if job.is_multiple_of(4) {
            EventKind::JobFailed
        } else {
            EventKind::JobSucceeded
        };
        events.extend(lifecycle(&run, (job % 3) as u32, job, end, job as f64));
    }
    store.ingest(&batch(&run, events)).await.unwrap();

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .jobs(&run.id, &JobFilter::default(), after, 60)
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|job| job.index));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(
        seen,
        (0..250).collect::<Vec<_>>(),
        "every job once, in order"
    );

    let failed = JobFilter {
        states: vec![JobState::Failed],
        ..JobFilter::default()
    };
    let page = store.jobs(&run.id, &failed, None, 500).await.unwrap();
    assert_eq!(page.items.len(), 50);
    assert!(page.items.iter().all(|job| job.status == JobState::Failed));
    assert!(page.next.is_none());

    let two_states = JobFilter {
        states: vec![JobState::Failed, JobState::Queued],
        agent: None,
        ..JobFilter::default()
    };
    assert_eq!(
        store
            .jobs(&run.id, &two_states, None, 500)
            .await
            .unwrap()
            .items
            .len(),
        100
    );

    let agent = JobFilter {
        agent: Some(1),
        ..JobFilter::default()
    };
    let page = store.jobs(&run.id, &agent, None, 500).await.unwrap();
    assert!(page.items.iter().all(|job| job.agent == Some(1)));
    assert_eq!(
        page.items.len(),
        (0..200).filter(|job| job % 3 == 1).count()
    );

    let error = JobFilter {
        error: Some("timeout".into()),
        ..JobFilter::default()
    };
    let page = store.jobs(&run.id, &error, None, 500).await.unwrap();
    assert!(!page.items.is_empty());
    assert!(
        page.items
            .iter()
            .all(|job| job.error.as_deref() == Some("timeout"))
    );

    let attempts = JobFilter {
        attempts: Some(0),
        ..JobFilter::default()
    };
    assert_eq!(
        store
            .jobs(&run.id, &attempts, None, 500)
            .await
            .unwrap()
            .items
            .len(),
        50
    );

    let failures = store.failures(&run.id, 10).await.unwrap();
    assert_eq!(failures.iter().map(|group| group.jobs).sum::<u64>(), 50);
    assert!(failures.windows(2).all(|pair| pair[0].jobs >= pair[1].jobs));
    let timeout = failures
        .iter()
        .find(|group| group.error == "timeout")
        .unwrap();
    assert_eq!(timeout.sample_job % 3, 0);

    assert!(matches!(
        store
            .jobs("no-such-run", &JobFilter::default(), None, 10)
            .await,
        Err(Error::UnknownRun(_))
    ));
    assert!(matches!(
        store.job(&run.id, 9_999).await,
        Err(Error::UnknownJob { .. })
    ));
}

async fn events_outputs_and_attachments(store: Store) {
    let run = new_run(&store, 3).await;
    let mut events = lifecycle(&run, 0, 0, EventKind::JobSucceeded, 10.0);
    events.push(with(
        event(&run, EventKind::Output, 0, 1, 1),
        None,
        Some(json!({ "title": "extra" })),
    ));
    let png = b"\x89PNG\r\n\x1a\nnot really".to_vec();
    events.push(with(
        event(&run, EventKind::Attachment, 1, 1, 1),
        Some("screenshot.png"),
        Some(serde_json::to_value(Attachment::new("screenshot.png", "image/png", &png)).unwrap()),
    ));
    store.ingest(&batch(&run, events)).await.unwrap();

    let all = store
        .events(&run.id, &EventFilter::default(), None, 2)
        .await
        .unwrap();
    assert_eq!(
        all.items.iter().map(|event| event.seq).collect::<Vec<_>>(),
        [1, 2]
    );
    let rest = store
        .events(&run.id, &EventFilter::default(), all.next, 50)
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 3);
    assert!(rest.next.is_none());
    let latest = store
        .latest_events(&run.id, &EventFilter::default(), 2)
        .await
        .unwrap();
    assert_eq!(
        latest.iter().map(|event| event.seq).collect::<Vec<_>>(),
        [4, 5]
    );
    let of_job = EventFilter {
        job: Some(1),
        ..EventFilter::default()
    };
    let job_events = store.events(&run.id, &of_job, None, 50).await.unwrap();
    assert_eq!(job_events.items.len(), 2);
    let attachment_event = &job_events.items[1];
    assert_eq!(attachment_event.kind, EventKind::Attachment);
    assert_eq!(attachment_event.data.as_ref().unwrap()["size"], png.len());
    assert!(
        attachment_event
            .data
            .as_ref()
            .unwrap()
            .get("base64")
            .is_none()
    );
    let kind = EventFilter {
        kind: Some(EventKind::JobStarted),
        ..EventFilter::default()
    };
    assert_eq!(
        store
            .events(&run.id, &kind, None, 50)
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    let outputs = store.outputs(&run.id, None, 50).await.unwrap();
    assert_eq!(outputs.items.len(), 2);
    assert_eq!(outputs.items[0].data["title"], "page 0");
    assert_eq!(outputs.items[1].data["title"], "extra");

    let (_, attachments) = store.job(&run.id, 1).await.unwrap();
    assert_eq!(attachments.len(), 1);
    assert_eq!(attachments[0].name, "screenshot.png");
    let (content_type, bytes) = store.attachment(&run.id, attachments[0].seq).await.unwrap();
    assert_eq!((content_type.as_str(), bytes), ("image/png", png));
    assert!(matches!(
        store.attachment(&run.id, 999).await,
        Err(Error::UnknownAttachment { .. })
    ));
}

async fn agents_are_summarized(store: Store) {
    let run = new_run(&store, 4).await;
    let agent_event = |kind, agent, message: Option<&str>| Event {
        kind,
        at_ms: 1_500,
        agent,
        job: None,
        message: message.map(str::to_owned),
        data: None,
        input: None,
    };
    let mut events = vec![
        agent_event(EventKind::AgentStarted, 0, None),
        agent_event(EventKind::AgentStartFailed, 1, Some("no browser")),
    ];
    events.extend(lifecycle(&run, 0, 0, EventKind::JobSucceeded, 1.0));
    events.extend(lifecycle(&run, 0, 1, EventKind::JobFailed, 1.0));
    events.push(event(&run, EventKind::JobStarted, 0, 2, 1));
    store.ingest(&batch(&run, events)).await.unwrap();
    let agents = store.agents(&run.id).await.unwrap();
    assert_eq!(agents.len(), 2);
    assert_eq!(agents[0].status, "busy", "running a job");
    assert_eq!((agents[0].succeeded, agents[0].failed), (1, 1));
    assert_eq!(agents[0].running_job, Some(2));
    assert_eq!(agents[1].status, "start_failed");
    assert_eq!(agents[1].error.as_deref(), Some("no browser"));
    store
        .ingest(&batch(
            &run,
            vec![agent_event(EventKind::AgentStopped, 0, None)],
        ))
        .await
        .unwrap();
    let agents = store.agents(&run.id).await.unwrap();
    assert_eq!(agents[0].status, "stopped");
    assert_eq!(agents[0].started_ms, Some(1_500), "kept across updates");
}

async fn finishing_ends_every_job(store: Store) {
    let run = new_run(&store, 4).await;
    store
        .ingest(&batch(
            &run,
            lifecycle(&run, 0, 0, EventKind::JobSucceeded, 1.0),
        ))
        .await
        .unwrap();
    store
        .ingest(&batch(
            &run,
            vec![event(&run, EventKind::JobStarted, 0, 1, 1)],
        ))
        .await
        .unwrap();
    let finish = Finish {
        status: RunState::Stopped,
        jobs: vec![FinishedJob {
            index: 1,
            status: JobState::Abandoned,
        }],
    };
    let shown = store.finish_run(&run.id, &finish, 5_000).await.unwrap();
    assert_eq!(shown.status, RunState::Stopped);
    assert_eq!(shown.finished_ms, Some(5_000));
    assert_eq!((shown.counts.succeeded, shown.counts.abandoned), (1, 3));
    assert_eq!(shown.counts.terminal(), 4);
    assert!(shown.eta_ms.is_none());

    let bad = Finish {
        status: RunState::Running,
        jobs: vec![],
    };
    assert!(matches!(
        store.finish_run(&run.id, &bad, 6_000).await,
        Err(Error::Invalid(_))
    ));
    let bad = Finish {
        status: RunState::Canceled,
        jobs: vec![FinishedJob {
            index: 2,
            status: JobState::Running,
        }],
    };
    assert!(matches!(
        store.finish_run(&run.id, &bad, 6_000).await,
        Err(Error::Invalid(_))
    ));
    let missing = Finish {
        status: RunState::Canceled,
        jobs: vec![],
    };
    assert!(matches!(
        store.finish_run("no-such-run", &missing, 6_000).await,
        Err(Error::UnknownRun(_))
    ));
}

async fn stats_compare_runs(store: Store) {
    let run = new_run(&store, 100).await;
    let mut events = Vec::new();
    for job in 0..100 {
        let end = if job < 90 {
            EventKind::JobSucceeded
        } else {
            EventKind::JobFailed
        };
        events.extend(lifecycle(&run, 0, job, end, (job + 1) as f64));
    }
    store.ingest(&batch(&run, events)).await.unwrap();
    let stats = store.stats(&run.id).await.unwrap();
    assert!((stats.success_rate - 0.9).abs() < 1e-9);
    let durations = stats.duration_ms.unwrap();
    assert_eq!(
        (durations.p50, durations.p90, durations.max),
        (45.0, 81.0, 90.0)
    );
    assert_eq!(durations.p99, 90.0);
    assert_eq!(stats.errors.iter().map(|group| group.jobs).sum::<u64>(), 10);
    assert_eq!(stats.outputs, 90);
    let price = stats
        .output_fields
        .iter()
        .find(|field| field.field == "price")
        .unwrap();
    assert_eq!(price.filled, 45, "null prices are not filled");
    let title = stats
        .output_fields
        .iter()
        .find(|field| field.field == "title")
        .unwrap();
    assert_eq!(title.filled, 90);

    let empty = new_run(&store, 3).await;
    let stats = store.stats(&empty.id).await.unwrap();
    assert_eq!(stats.success_rate, 0.0);
    assert!(stats.duration_ms.is_none());
}

async fn runs_are_listed_newest_first_and_deleted_whole(store: Store) {
    // Later than every run of earlier executions of this suite on a shared database.
    let base = u64::MAX / 4 + armada_core::wire::now_ms() * 8;
    let mut ids = Vec::new();
    for created in 0..5 {
        let mut run = new_run(&store, 0).await;
        end(&store, &run.id).await;
        store.delete_run(&run.id).await.unwrap();
        run.id = RunId::new().to_string();
        store.register_run(&run, base + created).await.unwrap();
        ids.push(run.id);
    }
    ids.reverse();
    let (first, next) = store.runs(None, 3).await.unwrap();
    assert_eq!(
        first.iter().map(|run| run.id.clone()).collect::<Vec<_>>(),
        ids[..3]
    );
    let (second, _) = store.runs(next.as_deref(), 2).await.unwrap();
    assert_eq!(
        second.iter().map(|run| run.id.clone()).collect::<Vec<_>>(),
        ids[3..5]
    );
    for id in &ids {
        end(&store, id).await;
        store.delete_run(id).await.unwrap();
    }

    let run = new_run(&store, 3).await;
    let mut events = lifecycle(&run, 0, 0, EventKind::JobSucceeded, 1.0);
    events.push(with(
        event(&run, EventKind::Attachment, 0, 0, 1),
        None,
        Some(serde_json::to_value(Attachment::new("a.txt", "text/plain", b"x")).unwrap()),
    ));
    let stored = batch(&run, events);
    store.ingest(&stored).await.unwrap();
    end(&store, &run.id).await;
    store.delete_run(&run.id).await.unwrap();
    assert!(matches!(
        store.run(&run.id, 0).await,
        Err(Error::UnknownRun(_))
    ));
    assert!(matches!(
        store.attachment(&run.id, 4).await,
        Err(Error::UnknownAttachment { .. })
    ));
    assert!(matches!(
        store.delete_run(&run.id).await,
        Err(Error::UnknownRun(_))
    ));
    // Its batch ids went with it: registering the run again accepts the same batch.
    store.register_run(&run, 1).await.unwrap();
    assert!(store.ingest(&stored).await.unwrap().stored);
}

/// Ends a run as its orchestrator would.
async fn end(store: &Store, run_id: &str) {
    let finish = Finish {
        status: RunState::Completed,
        jobs: Vec::new(),
    };
    store.finish_run(run_id, &finish, 50_000).await.unwrap();
}

async fn one_run_id_is_one_run_and_a_running_run_is_not_deleted(store: Store) {
    let run = new_run(&store, 3).await;
    // Another run under this id, with the same jobs or not, is refused.
    let refused = store.register_run(&run, 5_000).await;
    assert!(matches!(refused, Err(Error::Conflict(_))), "{refused:?}");
    let mut other = run.clone();
    other.jobs = 7;
    let refused = store.register_run(&other, 6_000).await;
    assert!(matches!(refused, Err(Error::Conflict(_))), "{refused:?}");
    let refused = store.delete_run(&run.id).await;
    assert!(
        matches!(&refused, Err(Error::Conflict(message)) if message.contains("still running")),
        "{refused:?}"
    );
    assert_eq!(store.run(&run.id, 7_000).await.unwrap().jobs, 3);
    end(&store, &run.id).await;
    // Nor once it ended.
    let refused = store.register_run(&run, 8_000).await;
    assert!(matches!(refused, Err(Error::Conflict(_))), "{refused:?}");
    store.delete_run(&run.id).await.unwrap();
}

/// A statement first prepared with a NULL duration, then run with real ones, and the other
/// way round: every event and every duration is stored (sqlx 0.9.0 typed such a parameter
/// float4 on PostgreSQL, and the batches that reused it failed).
async fn null_and_real_floats_share_prepared_statements(store: Store) {
    let jobs = 20;
    let run = new_run(&store, jobs).await;
    for job in 0..jobs {
        let started = batch(&run, vec![event(&run, EventKind::JobStarted, 0, job, 1)]);
        assert!(store.ingest(&started).await.unwrap().stored);
        let duration = 12.25 + job as f64;
        let data = json!({ "duration_ms": duration, "output": null });
        let ended = with(
            event(&run, EventKind::JobSucceeded, 0, job, 1),
            None,
            Some(data),
        );
        assert!(
            store
                .ingest(&batch(&run, vec![ended]))
                .await
                .unwrap()
                .stored
        );
    }
    let shown = store.run(&run.id, 90_000).await.unwrap();
    assert_eq!(shown.events, 2 * jobs);
    assert_eq!(shown.counts.succeeded, jobs);
    let listed = store
        .jobs(&run.id, &JobFilter::default(), None, 100)
        .await
        .unwrap();
    let durations: Vec<Option<f64>> = listed.items.iter().map(|job| job.duration_ms).collect();
    let expected: Vec<Option<f64>> = (0..jobs).map(|job| Some(12.25 + job as f64)).collect();
    assert_eq!(durations, expected);
}

/// An event of agent `agent` about no job.
fn agent_event(kind: EventKind, agent: u32, data: Option<serde_json::Value>) -> Event {
    Event {
        kind,
        at_ms: 3_000,
        agent,
        job: None,
        message: None,
        data,
        input: None,
    }
}

async fn silence_shows_as_a_stalled_run_and_gone_agents(store: Store) {
    let limit = std::time::Duration::from_millis(400);
    let store = store.with_stall_limit(limit);
    let run = new_run(&store, 2).await;
    let first = batch(
        &run,
        vec![
            agent_event(EventKind::AgentStarting, 0, None),
            agent_event(EventKind::AgentStarted, 0, None),
            event(&run, EventKind::JobStarted, 0, 0, 1),
            agent_event(EventKind::Heartbeat, 1, None),
        ],
    );
    assert!(store.ingest(&first).await.unwrap().stored);
    let now = armada_core::wire::now_ms;
    let shown = store.run(&run.id, now()).await.unwrap();
    assert_eq!(shown.status, RunState::Running);
    assert_eq!(shown.events, 3, "heartbeats are not stored");
    let agents = store.agents(&run.id).await.unwrap();
    let states: Vec<(&str, Option<u64>)> = agents
        .iter()
        .map(|agent| (agent.status.as_str(), agent.running_job))
        .collect();
    assert_eq!(states, [("busy", Some(0)), ("starting", None)]);

    tokio::time::sleep(limit * 2).await;
    let shown = store.run(&run.id, now()).await.unwrap();
    assert_eq!(shown.status, RunState::Stalled);
    assert!(
        shown
            .stalled_reason
            .as_deref()
            .unwrap()
            .contains("heard from"),
        "{shown:?}"
    );
    let agents = store.agents(&run.id).await.unwrap();
    assert!(
        agents.iter().all(|agent| agent.status == "gone"),
        "{agents:?}"
    );

    // A process following the run is heard from: it is running again; its agents stay gone.
    let follower = json!({ "follower": true });
    let heartbeat = batch(
        &run,
        vec![agent_event(EventKind::Heartbeat, 0, Some(follower))],
    );
    assert!(store.ingest(&heartbeat).await.unwrap().stored);
    assert_eq!(
        store.run(&run.id, now()).await.unwrap().status,
        RunState::Running
    );
    let agents = store.agents(&run.id).await.unwrap();
    assert!(
        agents.iter().all(|agent| agent.status == "gone"),
        "{agents:?}"
    );

    // An ended run is never stalled.
    end(&store, &run.id).await;
    tokio::time::sleep(limit * 2).await;
    assert_eq!(
        store.run(&run.id, now()).await.unwrap().status,
        RunState::Completed
    );
}

async fn sqlite() -> Store {
    let folder = tempfile::tempdir().unwrap().keep();
    Store::open(&format!(
        "sqlite:{}",
        folder.join("monitor.sqlite").display()
    ))
    .await
    .unwrap()
}

#[cfg(feature = "postgres")]
async fn postgres() -> Store {
    let url = std::env::var("ARMADA_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    Store::open(&url).await.unwrap_or_else(|error| {
        panic!("the PostgreSQL conformance tests need PostgreSQL ({error}); `cargo xtask test` starts it")
    })
}

/// The SQL Server store at `ARMADA_MSSQL_URL`, or `None` (said on stderr) when it is not set.
#[cfg(feature = "mssql")]
async fn mssql(test: &str) -> Option<Store> {
    let Ok(url) = std::env::var("ARMADA_MSSQL_URL") else {
        eprintln!(
            "mssql::{test} did NOT run: ARMADA_MSSQL_URL is not set (no SQL Server here); set it \
             to mssql://USER:PASSWORD@HOST:PORT/DATABASE?trust_server_certificate=true to run it"
        );
        return None;
    };
    Some(Store::open(&url).await.unwrap_or_else(|error| {
        panic!("the SQL Server conformance tests could not open ARMADA_MSSQL_URL: {error}")
    }))
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $test() {
                super::$test(super::sqlite().await).await;
            })*
        }

        #[cfg(feature = "postgres")]
        mod postgres {
            $(#[tokio::test]
            async fn $test() {
                super::$test(super::postgres().await).await;
            })*
        }

        #[cfg(feature = "mssql")]
        mod mssql {
            $(#[tokio::test]
            async fn $test() {
                if let Some(store) = super::mssql(stringify!($test)).await {
                    super::$test(store).await;
                }
            })*
        }
    };
}

conformance!(
    register_refuses_a_second_run_and_redacts,
    ingest_tracks_jobs_and_is_idempotent,
    bad_batches_change_nothing,
    jobs_are_keyset_paged_and_filtered,
    events_outputs_and_attachments,
    agents_are_summarized,
    finishing_ends_every_job,
    stats_compare_runs,
    runs_are_listed_newest_first_and_deleted_whole,
    one_run_id_is_one_run_and_a_running_run_is_not_deleted,
    null_and_real_floats_share_prepared_statements,
    silence_shows_as_a_stalled_run_and_gone_agents,
    text_with_nul_is_stored,
    a_run_of_a_hundred_million_jobs_is_registered_at_once,
    jobs_with_and_without_rows_are_paged_together,
    jobs_without_rows_end_with_their_run,
    events_past_the_job_count_make_no_job,
    the_timeline_counts_jobs_per_bucket_and_durations,
    a_started_event_keeps_the_job_input_with_secrets_hidden,
    jobs_are_sorted_by_a_column_and_keyset_paged,
    jobs_are_searched_by_input_and_output,
);

/// A job's state as a page shows it: (index, status, attempts).
fn states(jobs: &[Job]) -> Vec<(u64, JobState, u32)> {
    jobs.iter()
        .map(|job| (job.index, job.status, job.attempts))
        .collect()
}

/// Every job `filter` lists, read in pages of `limit`.
async fn every_page(store: &Store, run: &NewRun, filter: &JobFilter, limit: u32) -> Vec<Job> {
    let mut jobs = Vec::new();
    let mut after = None;
    loop {
        let page = store.jobs(&run.id, filter, after, limit).await.unwrap();
        assert!(page.items.len() <= limit as usize);
        jobs.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return jobs,
        }
    }
}

/// Registering costs the same for any number of jobs: a run of a hundred million answers at
/// once, each of its jobs readable though none was written.
async fn a_run_of_a_hundred_million_jobs_is_registered_at_once(store: Store) {
    let jobs = 100_000_000;
    let run = new_run(&store, jobs).await;
    let shown = store.run(&run.id, 2_000).await.unwrap();
    assert_eq!(shown.jobs, jobs);
    assert_eq!(shown.counts.queued, jobs);
    assert_eq!(shown.counts.terminal() + shown.counts.running, 0);

    let last = jobs - 1;
    let (job, attachments) = store.job(&run.id, last).await.unwrap();
    assert_eq!(job.index, last);
    assert_eq!(job.id, job_id(&run, last).to_string());
    assert_eq!(
        (job.status, job.attempts, job.agent),
        (JobState::Queued, 0, None)
    );
    assert!(job.started_ms.is_none() && job.finished_ms.is_none() && job.error.is_none());
    assert!(attachments.is_empty());
    assert!(matches!(
        store.job(&run.id, jobs).await,
        Err(Error::UnknownJob { .. })
    ));

    // The last jobs, one of them started: a page ends with the run.
    let started = batch(
        &run,
        vec![event(&run, EventKind::JobStarted, 1, last - 1, 1)],
    );
    assert!(store.ingest(&started).await.unwrap().stored);
    let page = store
        .jobs(&run.id, &JobFilter::default(), Some(last - 3), 10)
        .await
        .unwrap();
    assert_eq!(
        states(&page.items),
        [
            (last - 2, JobState::Queued, 0),
            (last - 1, JobState::Running, 1),
            (last, JobState::Queued, 0),
        ]
    );
    assert_eq!(page.next, None);
    let counts = store.run(&run.id, 3_000).await.unwrap().counts;
    assert_eq!((counts.queued, counts.running), (jobs - 1, 1));
    end(&store, &run.id).await;
    store.delete_run(&run.id).await.unwrap();
}

/// Jobs with rows and jobs without one are listed together in index order, page after page,
/// whatever the filter.
async fn jobs_with_and_without_rows_are_paged_together(store: Store) {
    let run = new_run(&store, 30).await;
    let mut events = lifecycle(&run, 0, 2, EventKind::JobSucceeded, 5.0);
    events.extend(lifecycle(&run, 1, 6, EventKind::JobFailed, 5.0));
    events.extend(lifecycle(&run, 1, 7, EventKind::JobFailed, 5.0));
    events.extend(lifecycle(&run, 0, 10, EventKind::JobSucceeded, 5.0));
    events.push(event(&run, EventKind::JobStarted, 0, 5, 1));
    events.extend(lifecycle(&run, 1, 29, EventKind::JobSucceeded, 5.0));
    store.ingest(&batch(&run, events)).await.unwrap();
    let state_of = |index: u64| match index {
        2 | 10 | 29 => (JobState::Succeeded, 1),
        6 | 7 => (JobState::Failed, 1),
        5 => (JobState::Running, 1),
        _ => (JobState::Queued, 0),
    };
    let expected = |keep: &dyn Fn(JobState) -> bool| -> Vec<(u64, JobState, u32)> {
        (0..30)
            .map(|index| (index, state_of(index).0, state_of(index).1))
            .filter(|(_, state, _)| keep(*state))
            .collect()
    };

    for limit in [1, 4, 7, 50] {
        let all = every_page(&store, &run, &JobFilter::default(), limit).await;
        assert_eq!(states(&all), expected(&|_| true), "pages of {limit}");
        let queued = JobFilter {
            states: vec![JobState::Queued],
            ..JobFilter::default()
        };
        let listed = every_page(&store, &run, &queued, limit).await;
        assert_eq!(
            states(&listed),
            expected(&|state| state == JobState::Queued),
            "queued, pages of {limit}"
        );
        let succeeded = JobFilter {
            states: vec![JobState::Succeeded],
            ..JobFilter::default()
        };
        let listed = every_page(&store, &run, &succeeded, limit).await;
        assert_eq!(
            states(&listed),
            expected(&|state| state == JobState::Succeeded),
            "succeeded, pages of {limit}"
        );
    }
    let two = JobFilter {
        states: vec![JobState::Failed, JobState::Queued],
        ..JobFilter::default()
    };
    let listed = every_page(&store, &run, &two, 3).await;
    assert_eq!(
        states(&listed),
        expected(&|state| matches!(state, JobState::Failed | JobState::Queued))
    );
    let never_tried = JobFilter {
        attempts: Some(0),
        ..JobFilter::default()
    };
    let listed = every_page(&store, &run, &never_tried, 5).await;
    assert_eq!(
        states(&listed),
        expected(&|state| state == JobState::Queued)
    );
    let of_agent = JobFilter {
        agent: Some(1),
        ..JobFilter::default()
    };
    let listed = every_page(&store, &run, &of_agent, 2).await;
    assert_eq!(
        listed.iter().map(|job| job.index).collect::<Vec<_>>(),
        [6, 7, 29]
    );
    // A job without a row reads as a registered one did.
    let all = every_page(&store, &run, &JobFilter::default(), 50).await;
    assert_eq!(all[3].id, job_id(&run, 3).to_string());
    assert_eq!(all[3].agent, None);
    assert_eq!(all[3], store.job(&run.id, 3).await.unwrap().0);
    assert_eq!(all[2].id, job_id(&run, 2).to_string());

    // Past a thousand ended jobs, the first queued ones are found.
    let run = new_run(&store, 1_200).await;
    let mut events = Vec::new();
    for job in 0..1_100 {
        events.extend(lifecycle(&run, 0, job, EventKind::JobSucceeded, 1.0));
    }
    store.ingest(&batch(&run, events)).await.unwrap();
    let queued = JobFilter {
        states: vec![JobState::Queued],
        ..JobFilter::default()
    };
    let page = store.jobs(&run.id, &queued, None, 5).await.unwrap();
    assert_eq!(
        page.items.iter().map(|job| job.index).collect::<Vec<_>>(),
        (1_100..1_105).collect::<Vec<_>>()
    );
    assert_eq!(page.next, Some(1_104));
    let page = store.jobs(&run.id, &queued, Some(1_195), 5).await.unwrap();
    assert_eq!(
        page.items.iter().map(|job| job.index).collect::<Vec<_>>(),
        (1_196..1_200).collect::<Vec<_>>()
    );
    assert_eq!(page.next, None);
    let counts = store.run(&run.id, 9_000).await.unwrap().counts;
    assert_eq!((counts.succeeded, counts.queued), (1_100, 100));
}

/// Once a run ended, its jobs without a row are in its leftover state since its end; a job
/// listed in another state gets it, and a late event moves a job as it moved its row.
async fn jobs_without_rows_end_with_their_run(store: Store) {
    let run = new_run(&store, 10).await;
    let mut events = lifecycle(&run, 0, 0, EventKind::JobSucceeded, 1.0);
    events.push(event(&run, EventKind::JobStarted, 1, 1, 1));
    // An event that says no state leaves a job first heard of queued.
    events.push(with(
        event(&run, EventKind::Info, 1, 4, 1),
        Some("note"),
        None,
    ));
    store.ingest(&batch(&run, events)).await.unwrap();
    let (job, _) = store.job(&run.id, 4).await.unwrap();
    assert_eq!(
        (job.status, job.attempts, job.agent),
        (JobState::Queued, 1, Some(1))
    );
    assert_eq!(job.last_event.as_deref(), Some("note"));
    let canceled = Finish {
        status: RunState::Canceled,
        jobs: vec![FinishedJob {
            index: 1,
            status: JobState::Canceled,
        }],
    };
    let shown = store.finish_run(&run.id, &canceled, 7_000).await.unwrap();
    assert_eq!((shown.counts.succeeded, shown.counts.canceled), (1, 9));
    assert_eq!(shown.counts.terminal(), 10);
    let (job, _) = store.job(&run.id, 5).await.unwrap();
    assert_eq!((job.status, job.attempts), (JobState::Canceled, 0));
    assert_eq!(job.finished_ms, Some(7_000));
    assert_eq!(job.id, job_id(&run, 5).to_string());
    let filter = JobFilter {
        states: vec![JobState::Canceled],
        ..JobFilter::default()
    };
    let listed = every_page(&store, &run, &filter, 4).await;
    assert_eq!(
        listed.iter().map(|job| job.index).collect::<Vec<_>>(),
        (1..10).collect::<Vec<_>>()
    );
    let queued = JobFilter {
        states: vec![JobState::Queued],
        ..JobFilter::default()
    };
    assert!(every_page(&store, &run, &queued, 4).await.is_empty());

    // Late events: a newer attempt moves a job on; one that says no state keeps the job's.
    let late = batch(
        &run,
        vec![
            event(&run, EventKind::JobStarted, 0, 7, 1),
            with(event(&run, EventKind::Info, 0, 8, 1), Some("late"), None),
        ],
    );
    store.ingest(&late).await.unwrap();
    let (job, _) = store.job(&run.id, 7).await.unwrap();
    assert_eq!((job.status, job.attempts), (JobState::Running, 1));
    assert_eq!(job.finished_ms, Some(7_000));
    let (job, _) = store.job(&run.id, 8).await.unwrap();
    assert_eq!((job.status, job.attempts), (JobState::Canceled, 1));
    assert_eq!(job.last_event.as_deref(), Some("late"));
    let counts = store.run(&run.id, 8_000).await.unwrap().counts;
    assert_eq!(
        (counts.succeeded, counts.running, counts.canceled),
        (1, 1, 8)
    );

    // A stopped run's jobs are abandoned, but for one listed as canceled.
    let run = new_run(&store, 4).await;
    let stopped = Finish {
        status: RunState::Stopped,
        jobs: vec![
            FinishedJob {
                index: 2,
                status: JobState::Canceled,
            },
            FinishedJob {
                index: 3,
                status: JobState::Abandoned,
            },
        ],
    };
    let shown = store.finish_run(&run.id, &stopped, 9_000).await.unwrap();
    assert_eq!((shown.counts.abandoned, shown.counts.canceled), (3, 1));
    assert_eq!(
        store.job(&run.id, 2).await.unwrap().0.status,
        JobState::Canceled
    );
    assert_eq!(
        store.job(&run.id, 0).await.unwrap().0.status,
        JobState::Abandoned
    );
}

/// An event about a job the run does not have is stored and makes no job.
async fn events_past_the_job_count_make_no_job(store: Store) {
    let run = new_run(&store, 3).await;
    let events = vec![
        event(&run, EventKind::JobStarted, 0, 3, 1),
        event(&run, EventKind::JobStarted, 0, 1_000, 1),
        event(&run, EventKind::JobStarted, 0, 1, 1),
    ];
    let ingested = store.ingest(&batch(&run, events)).await.unwrap();
    assert_eq!(
        ingested
            .jobs
            .iter()
            .map(|job| job.index)
            .collect::<Vec<_>>(),
        [1]
    );
    let shown = store.run(&run.id, 3_000).await.unwrap();
    assert_eq!(shown.events, 3, "the events are stored");
    assert_eq!((shown.counts.queued, shown.counts.running), (2, 1));
    for index in [3, 1_000] {
        assert!(matches!(
            store.job(&run.id, index).await,
            Err(Error::UnknownJob { .. })
        ));
    }
    let all = every_page(&store, &run, &JobFilter::default(), 2).await;
    assert_eq!(
        all.iter().map(|job| job.index).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    let running = JobFilter {
        states: vec![JobState::Running],
        ..JobFilter::default()
    };
    assert_eq!(every_page(&store, &run, &running, 10).await.len(), 1);
}

/// A script's message may hold anything, NUL included (PostgreSQL's text refuses it).
async fn text_with_nul_is_stored(store: Store) {
    let run = new_run(&store, 1).await;
    let mut events = lifecycle(&run, 0, 0, EventKind::JobFailed, 10.0);
    let failed = events.pop().unwrap();
    events.push(with(failed, Some("bad\0byte"), None));
    store.ingest(&batch(&run, events)).await.unwrap();
    let stored = store
        .events(&run.id, &EventFilter::default(), None, 50)
        .await
        .unwrap();
    let messages: Vec<_> = stored
        .items
        .iter()
        .filter_map(|event| event.message.as_deref())
        .collect();
    assert!(messages.contains(&"bad\u{2400}byte"), "{messages:?}");
}

/// A SQL Server URL in a build without the `mssql` feature names the feature to enable.
#[cfg(not(feature = "mssql"))]
#[tokio::test]
async fn mssql_urls_need_the_feature() {
    let error = Store::open("mssql://sa:hunter2@localhost:1433/armada")
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::FeatureMissing { feature: "mssql", ref url } if !url.contains("hunter2")),
        "{error:?}"
    );
}

/// A malformed SQL Server URL is refused before anything connects, password hidden.
#[cfg(feature = "mssql")]
#[tokio::test]
async fn malformed_mssql_urls_are_refused() {
    let error = Store::open("mssql://sa:hunter2@localhost:port/armada")
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Invalid(ref why) if !why.contains("hunter2")),
        "{error:?}"
    );
}

/// A SQL Server that cannot be reached is an error naming the store, not a panic (no rustls
/// crypto provider is installed by this test process beforehand).
#[cfg(feature = "mssql")]
#[tokio::test]
async fn unreachable_mssql_is_an_error() {
    let error = Store::open("mssql://sa:hunter2@127.0.0.1:1/armada")
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::SqlServer { ref url, .. } if !url.contains("hunter2")),
        "{error:?}"
    );
}

/// A store written by the previous schema version (2) is upgraded when opened and then read
/// and written at once, on the connections that saw it before the upgrade: reads name their
/// columns, so a table that gained one cannot widen a statement cached before (with `SELECT *`
/// the SQLite worker panicked and the run could not be finished).
#[tokio::test]
async fn a_store_of_the_previous_version_is_upgraded_and_used_at_once() {
    let folder = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", folder.path().join("monitor.sqlite").display());
    drop(Store::open(&url).await.unwrap());
    // Back to version 3: what version 4 added removed again.
    let path = folder.path().join("monitor.sqlite");
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path);
    let mut connection = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options)
        .await
        .unwrap();
    for statement in [
        "ALTER TABLE armada_runs DROP COLUMN name",
        "ALTER TABLE armada_runs DROP COLUMN tags",
        "DELETE FROM armada_schema WHERE version = 4",
    ] {
        sqlx::query(statement)
            .execute(&mut connection)
            .await
            .unwrap();
    }
    sqlx::Connection::close(connection).await.unwrap();

    let store = Store::open(&url).await.unwrap();
    let run = new_run(&store, 2).await;
    let events = vec![
        agent_event(EventKind::AgentStarted, 0, None),
        event(&run, EventKind::JobStarted, 0, 0, 1),
    ];
    assert!(store.ingest(&batch(&run, events)).await.unwrap().stored);
    let shown = store.run(&run.id, 4_000).await.unwrap();
    assert_eq!(
        (shown.events, shown.name.as_deref()),
        (2, Some("nightly prices"))
    );
    assert_eq!(store.agents(&run.id).await.unwrap()[0].status, "busy");
    end(&store, &run.id).await;
    assert_eq!(
        store.run(&run.id, 60_000).await.unwrap().status,
        RunState::Completed
    );
}

/// Registering writes the run's row alone, whatever its job count, and an event writes the
/// row of a job the run has, never of one past its count (the SQLite file read directly).
#[tokio::test]
async fn only_events_write_job_rows() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("monitor.sqlite");
    let store = Store::open(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path);
    let mut connection = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options)
        .await
        .unwrap();
    let jobs = 100_000_000;
    let run = new_run(&store, jobs).await;
    let mut rows = async || -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM armada_jobs WHERE run_id = ?")
            .bind(&run.id)
            .fetch_one(&mut connection)
            .await
            .unwrap()
    };
    assert_eq!(rows().await, 0);
    let events = vec![
        event(&run, EventKind::JobStarted, 0, 12, 1),
        event(&run, EventKind::JobStarted, 0, jobs, 1),
    ];
    assert!(store.ingest(&batch(&run, events)).await.unwrap().stored);
    assert_eq!(rows().await, 1);
}

/// Job `job` of `run` started at `started_ms` on agent 0 and, when `end` is given, ended as
/// it after `duration_ms`.
fn timed(run: &NewRun, job: u64, started_ms: u64, end: Option<(EventKind, f64)>) -> Vec<Event> {
    let mut events = vec![Event {
        at_ms: started_ms,
        ..event(run, EventKind::JobStarted, 0, job, 1)
    }];
    if let Some((kind, duration_ms)) = end {
        events.push(Event {
            at_ms: started_ms + duration_ms as u64,
            data: Some(json!({ "duration_ms": duration_ms })),
            message: Some("ended".into()),
            ..event(run, kind, 0, job, 1)
        });
    }
    events
}

async fn the_timeline_counts_jobs_per_bucket_and_durations(store: Store) {
    // Registered at 1 000 ms; job `j` starts in second `j` of the run.
    let run = new_run(&store, 6).await;
    let mut events = Vec::new();
    for (job, end) in [
        (0, Some((EventKind::JobSucceeded, 100.0))),
        (1, Some((EventKind::JobSucceeded, 200.0))),
        (2, Some((EventKind::JobSucceeded, 400.0))),
        (3, Some((EventKind::JobFailed, 50.0))),
        (4, None),
    ] {
        events.extend(timed(&run, job, 1_100 + job * 1_000, end));
    }
    store.ingest(&batch(&run, events)).await.unwrap();
    // Unasked, 9 s are charted in 100 ms buckets; asked for seconds, in 1 s ones.
    let fine = store.timeline(&run.id, 10_000, None).await.unwrap();
    assert_eq!((fine.bucket_ms, fine.buckets.len()), (100, 91));
    assert_eq!(
        (fine.buckets[11].started, fine.buckets[13].succeeded),
        (1, 1)
    );
    let timeline = store.timeline(&run.id, 10_000, Some(1_000)).await.unwrap();
    assert_eq!(
        (timeline.start_ms, timeline.end_ms, timeline.bucket_ms),
        (1_000, 10_000, 1_000)
    );
    assert_eq!(timeline.buckets.len(), 10);
    let column = |read: fn(&armada_monitor::model::TimelineBucket) -> u64| {
        timeline.buckets.iter().map(read).collect::<Vec<_>>()
    };
    assert_eq!(column(|b| b.started), [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]);
    assert_eq!(column(|b| b.succeeded), [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(column(|b| b.failed), [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(timeline.buckets[3].at_ms, 4_000);
    let durations = timeline.durations.expect("three jobs succeeded");
    assert_eq!((durations.min_ms, durations.max_ms), (100.0, 400.0));
    assert_eq!(durations.counts.iter().sum::<u64>(), 3);
    assert_eq!(durations.counts[0], 1, "{durations:?}");
    assert_eq!(durations.counts.last(), Some(&1), "{durations:?}");
    // Canceled at 12 000 ms: the running job and the one never heard of end in the last
    // bucket, and the timeline stops at the run's end.
    let canceled = Finish {
        status: RunState::Canceled,
        jobs: Vec::new(),
    };
    store.finish_run(&run.id, &canceled, 12_000).await.unwrap();
    let timeline = store.timeline(&run.id, 60_000, Some(1_000)).await.unwrap();
    assert_eq!((timeline.end_ms, timeline.buckets.len()), (12_000, 12));
    let last = timeline.buckets.last().unwrap();
    assert_eq!((last.canceled, last.started), (2, 0));
    let before = store
        .timeline(&new_run(&store, 3).await.id, 1_000, None)
        .await
        .unwrap();
    assert_eq!(before.buckets.len(), 1);
    assert!(before.durations.is_none());
}

async fn a_started_event_keeps_the_job_input_with_secrets_hidden(store: Store) {
    let run = new_run(&store, 2).await;
    let input = r#"{"name":"Ada","api_token":"s3cret","pages":[1,2]}"#;
    let started = Event {
        input: Some(
            serde_json::value::RawValue::from_string(input.into())
                .unwrap()
                .into(),
        ),
        ..event(&run, EventKind::JobStarted, 0, 1, 1)
    };
    store.ingest(&batch(&run, vec![started])).await.unwrap();
    let of_job = EventFilter {
        job: Some(1),
        ..EventFilter::default()
    };
    let events = store.events(&run.id, &of_job, None, 10).await.unwrap();
    let data = events.items[0]
        .data
        .as_ref()
        .expect("the input is in the data");
    assert_eq!(
        data["input"],
        json!({ "name": "Ada", "api_token": "***", "pages": [1, 2] })
    );
}

/// The indexes of every job `filter` lists sorted by `sort` in `order` (`None`: by index),
/// read in pages of `limit`, each page's cursor checked to read back as written.
async fn every_sorted_page(
    store: &Store,
    run: &NewRun,
    filter: &JobFilter,
    sort: Option<JobSort>,
    order: SortOrder,
    limit: u32,
) -> Vec<u64> {
    let mut indexes = Vec::new();
    let (mut after, mut cursor) = (None, None);
    loop {
        let (items, more) = match sort {
            None => {
                let page = store
                    .jobs_by_index(&run.id, filter, order, after, limit)
                    .await
                    .unwrap();
                after = page.next;
                (page.items, page.next.is_some())
            }
            Some(sort) => {
                let page = store
                    .sorted_jobs(&run.id, filter, sort, order, cursor, limit)
                    .await
                    .unwrap();
                if let Some(next) = page.next {
                    assert_eq!(JobCursor::parse(&next.to_string(), sort), Some(next));
                }
                cursor = page.next;
                (page.items, page.next.is_some())
            }
        };
        assert!(items.len() <= limit as usize);
        indexes.extend(items.iter().map(|job| job.index));
        if !more {
            return indexes;
        }
    }
}

/// Job `job` of `run` on agent 0: attempt `attempt` started at `started_ms` and, with a
/// duration, ended as `end` that much later; its input is `input`.
fn attempt(
    run: &NewRun,
    (job, attempt): (u64, u32),
    started_ms: u64,
    end: Option<(EventKind, f64, serde_json::Value)>,
    input: &serde_json::Value,
) -> Vec<Event> {
    let started = Event {
        at_ms: started_ms,
        input: Some(
            serde_json::value::RawValue::from_string(input.to_string())
                .unwrap()
                .into(),
        ),
        ..event(run, EventKind::JobStarted, 0, job, attempt)
    };
    let mut events = vec![started];
    if let Some((kind, duration_ms, data)) = end {
        events.push(Event {
            at_ms: started_ms + duration_ms as u64,
            data: Some(data),
            message: Some("ended".into()),
            ..event(run, kind, 0, job, attempt)
        });
    }
    events
}

/// Rows sort by their column, NULLs last, equal values by index, then the jobs without a row
/// by index; page after page of two, in both orders, with filters.
async fn jobs_are_sorted_by_a_column_and_keyset_paged(store: Store) {
    let run = new_run(&store, 10).await;
    let ended =
        |kind, duration_ms: f64| Some((kind, duration_ms, json!({ "duration_ms": duration_ms })));
    let none = json!({});
    let mut events = Vec::new();
    // (job, started, end): 7 succeeds on its second attempt; 5 and 8 run; 0, 3, 6 and 9 have
    // no row.
    for (job, started_ms, end) in [
        (1, 3_000, ended(EventKind::JobSucceeded, 30.0)),
        (2, 2_000, ended(EventKind::JobFailed, 10.0)),
        (4, 4_000, ended(EventKind::JobSucceeded, 30.0)),
        (5, 5_000, None),
        (8, 2_000, None),
    ] {
        events.extend(attempt(&run, (job, 1), started_ms, end, &none));
    }
    events.extend(attempt(&run, (7, 1), 5_500, None, &none));
    events.extend(attempt(
        &run,
        (7, 2),
        6_000,
        ended(EventKind::JobSucceeded, 20.0),
        &none,
    ));
    store.ingest(&batch(&run, events)).await.unwrap();

    let all = JobFilter::default();
    let (asc, desc) = (SortOrder::Asc, SortOrder::Desc);
    for (sort, order, expected) in [
        (None, asc, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
        (None, desc, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]),
        (Some(JobSort::Duration), asc, [2, 7, 1, 4, 5, 8, 0, 3, 6, 9]),
        (
            Some(JobSort::Duration),
            desc,
            [1, 4, 7, 2, 5, 8, 0, 3, 6, 9],
        ),
        (Some(JobSort::Attempts), asc, [1, 2, 4, 5, 8, 7, 0, 3, 6, 9]),
        (
            Some(JobSort::Attempts),
            desc,
            [7, 1, 2, 4, 5, 8, 0, 3, 6, 9],
        ),
        (Some(JobSort::Started), asc, [2, 8, 1, 4, 5, 7, 0, 3, 6, 9]),
        (Some(JobSort::Started), desc, [7, 5, 4, 1, 2, 8, 0, 3, 6, 9]),
        (Some(JobSort::Finished), asc, [2, 1, 4, 7, 5, 8, 0, 3, 6, 9]),
        (
            Some(JobSort::Finished),
            desc,
            [7, 4, 1, 2, 5, 8, 0, 3, 6, 9],
        ),
    ] {
        for limit in [2, 3, 50] {
            let listed = every_sorted_page(&store, &run, &all, sort, order, limit).await;
            assert_eq!(listed, expected, "{sort:?} {order:?}, pages of {limit}");
        }
    }
    // The cursor names the last job's value and index, or, past the rows, its index alone.
    let page = store
        .sorted_jobs(&run.id, &all, JobSort::Duration, asc, None, 2)
        .await
        .unwrap();
    assert_eq!(page.next.unwrap().to_string(), "20:7");
    let past_rows = JobCursor::Row {
        value: None,
        index: 8,
    };
    let page = store
        .sorted_jobs(&run.id, &all, JobSort::Duration, asc, Some(past_rows), 3)
        .await
        .unwrap();
    assert_eq!(page.next.unwrap().to_string(), "rowless:6");

    // Filters combine with every sort.
    let filtered = |states: Vec<JobState>, attempts| JobFilter {
        states,
        attempts,
        ..JobFilter::default()
    };
    for (filter, sort, order, expected) in [
        (
            filtered(vec![JobState::Succeeded], None),
            Some(JobSort::Duration),
            asc,
            vec![7, 1, 4],
        ),
        (
            filtered(vec![JobState::Running, JobState::Queued], None),
            Some(JobSort::Started),
            desc,
            vec![5, 8, 0, 3, 6, 9],
        ),
        (
            filtered(Vec::new(), Some(1)),
            Some(JobSort::Finished),
            desc,
            vec![4, 1, 2, 5, 8],
        ),
        (
            filtered(vec![JobState::Queued], None),
            None,
            desc,
            vec![9, 6, 3, 0],
        ),
        (
            filtered(vec![JobState::Succeeded, JobState::Failed], None),
            None,
            desc,
            vec![7, 4, 2, 1],
        ),
    ] {
        let listed = every_sorted_page(&store, &run, &filter, sort, order, 2).await;
        assert_eq!(listed, expected, "{filter:?} {sort:?} {order:?}");
    }

    // Down from the last index, the first queued jobs are found below a thousand ended ones.
    let run = new_run(&store, 1_200).await;
    let mut events = Vec::new();
    for job in 100..1_200 {
        events.extend(lifecycle(&run, 0, job, EventKind::JobSucceeded, 1.0));
    }
    store.ingest(&batch(&run, events)).await.unwrap();
    let queued = JobFilter {
        states: vec![JobState::Queued],
        ..JobFilter::default()
    };
    let page = store
        .jobs_by_index(&run.id, &queued, desc, None, 5)
        .await
        .unwrap();
    let indexes: Vec<u64> = page.items.iter().map(|job| job.index).collect();
    assert_eq!((indexes, page.next), (vec![99, 98, 97, 96, 95], Some(95)));
    let page = store
        .jobs_by_index(&run.id, &queued, desc, Some(3), 5)
        .await
        .unwrap();
    let indexes: Vec<u64> = page.items.iter().map(|job| job.index).collect();
    assert_eq!((indexes, page.next), (vec![2, 1, 0], None));
    let page = store
        .sorted_jobs(
            &run.id,
            &all,
            JobSort::Duration,
            desc,
            Some(JobCursor::Rowless { index: 97 }),
            5,
        )
        .await
        .unwrap();
    let indexes: Vec<u64> = page.items.iter().map(|job| job.index).collect();
    assert_eq!((indexes, page.next), (vec![98, 99], None));
}

/// Jobs are found by a top-level key of their input or output and its value, strings as they
/// are and numbers and booleans by their JSON text; a job without a row never is.
async fn jobs_are_searched_by_input_and_output(store: Store) {
    let run = new_run(&store, 6).await;
    let succeeded = |duration_ms: f64, output: serde_json::Value| {
        Some((
            EventKind::JobSucceeded,
            duration_ms,
            json!({ "duration_ms": duration_ms, "output": output }),
        ))
    };
    let failed = Some((EventKind::JobFailed, 10.0, json!({ "duration_ms": 10.0 })));
    let mut events = Vec::new();
    for (job, input, end) in [
        (
            0,
            json!({ "kind": "product", "n": 3 }),
            succeeded(50.0, json!({ "title": "a", "price": 9.5 })),
        ),
        (
            1,
            json!({ "kind": "slow", "n": "3", "my-key": "x y:z" }),
            succeeded(20.0, json!({ "title": "b", "price": 3 })),
        ),
        (
            2,
            json!({ "kind": "product", "n": 4, "nested": { "n": 3 } }),
            failed,
        ),
        (
            3,
            json!({ "kind": "product", "flag": true, "none": null }),
            None,
        ),
    ] {
        events.extend(attempt(&run, (job, 1), 2_000 + job * 100, end, &input));
    }
    events.push(with(
        event(&run, EventKind::Output, 0, 3, 1),
        None,
        Some(json!({ "title": "partial" })),
    ));
    store.ingest(&batch(&run, events)).await.unwrap();

    let search = |input: Option<(&str, &str)>, output: Option<(&str, &str)>| JobFilter {
        input: input.map(|(key, value)| PayloadMatch::new(key, value).unwrap()),
        output: output.map(|(key, value)| PayloadMatch::new(key, value).unwrap()),
        ..JobFilter::default()
    };
    for (filter, expected) in [
        (search(Some(("kind", "product")), None), vec![0, 2, 3]),
        (search(Some(("n", "3")), None), vec![0, 1]),
        (search(Some(("flag", "true")), None), vec![3]),
        (search(Some(("my-key", "x y:z")), None), vec![1]),
        (search(Some(("kind", "Product")), None), vec![]),
        // Nested objects, `null` and keys below the top level match nothing.
        (search(Some(("nested", "{\"n\":3}")), None), vec![]),
        (search(Some(("none", "null")), None), vec![]),
        (search(None, Some(("title", "b"))), vec![1]),
        (search(None, Some(("price", "9.5"))), vec![0]),
        (search(None, Some(("price", "3"))), vec![1]),
        (search(None, Some(("title", "partial"))), vec![3]),
        (
            search(Some(("kind", "product")), Some(("title", "a"))),
            vec![0],
        ),
        (search(Some(("kind", "slow")), Some(("title", "a"))), vec![]),
    ] {
        let listed = every_sorted_page(&store, &run, &filter, None, SortOrder::Asc, 2).await;
        assert_eq!(listed, expected, "{filter:?}");
    }
    // With a state filter and a sort, in pages of one; by index down.
    let ended = JobFilter {
        states: vec![JobState::Succeeded, JobState::Failed],
        ..search(Some(("kind", "product")), None)
    };
    let listed = every_sorted_page(
        &store,
        &run,
        &ended,
        Some(JobSort::Duration),
        SortOrder::Desc,
        1,
    )
    .await;
    assert_eq!(listed, [0, 2]);
    let product = search(Some(("kind", "product")), None);
    let listed = every_sorted_page(&store, &run, &product, None, SortOrder::Desc, 1).await;
    assert_eq!(listed, [3, 2, 0]);
    let listed = every_sorted_page(
        &store,
        &run,
        &product,
        Some(JobSort::Duration),
        SortOrder::Asc,
        2,
    )
    .await;
    assert_eq!(listed, [2, 0, 3]);
    // Keys that no JSON path syntax shares are refused before any SQL.
    assert!(PayloadMatch::new("a.b", "1").is_err());
    assert!(PayloadMatch::new("a\"", "1").is_err());
    assert!(PayloadMatch::parse("kind").is_err());
}

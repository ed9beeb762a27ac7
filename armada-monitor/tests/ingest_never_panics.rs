//! Property tests: whatever an agent (or anyone holding its token) sends the monitor, ingest
//! stores it or refuses it, without panicking, and the run stays readable afterwards. Batches
//! are made of any event kind, any numbers (past `i64::MAX` too), text with NUL and
//! surrogates' replacements, any JSON as data, and attachments whose base64, names and media
//! types are anything.
//!
//! The checked-in corpus `tests/corpus/ingest/` holds batches as agents send them, and as an
//! attacker might (NUL in text, numbers at their limits, attachments that are not base64, jobs
//! the run does not have): each is read off the wire and ingested, and the run stays readable.
//! A failing case proptest finds is kept in `tests/corpus/ingest/regressions.txt`.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use armada_core::wire::{Event, EventBatch, EventJob, EventKind, WIRE_VERSION};
use armada_core::{JobId, RunId};
use armada_monitor::Store;
use armada_monitor::model::NewRun;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{Value, json};

const JOBS: u64 = 4;

fn kinds() -> impl Strategy<Value = EventKind> {
    prop::sample::select(vec![
        EventKind::AgentStarting,
        EventKind::AgentStarted,
        EventKind::AgentStartFailed,
        EventKind::AgentStopped,
        EventKind::JobStarted,
        EventKind::Success,
        EventKind::Failure,
        EventKind::Info,
        EventKind::Progress,
        EventKind::Output,
        EventKind::Attachment,
        EventKind::Retrying,
        EventKind::JobSucceeded,
        EventKind::JobFailed,
        EventKind::RunCompleted,
        EventKind::Heartbeat,
    ])
}

/// Any JSON, a few levels deep.
fn json_values() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// What an attachment event's data may hold: well-formed, or nearly.
fn attachment_data() -> impl Strategy<Value = Value> {
    (".{0,20}", ".{0,20}", prop_oneof!["[A-Za-z0-9+/=]{0,64}", ".{0,64}"]).prop_map(
        |(name, content_type, base64)| {
            json!({ "name": name, "content_type": content_type, "base64": base64 })
        },
    )
}

fn events() -> impl Strategy<Value = Event> {
    (
        kinds(),
        prop_oneof![0..10_000u64, any::<u64>()],
        prop_oneof![0..4u32, any::<u32>()],
        proptest::option::of((prop_oneof![0..JOBS + 2, any::<u64>()], any::<u32>())),
        proptest::option::of(".{0,60}"),
        proptest::option::of(prop_oneof![json_values(), attachment_data()]),
    )
        .prop_map(|(kind, at_ms, agent, job, message, data)| Event {
            kind,
            at_ms,
            agent,
            job: job.map(|(index, attempt)| EventJob {
                id: JobId::new(),
                index,
                attempt,
            }),
            message,
            data,
            input: None,
        })
}

async fn store_with_run() -> (Store, NewRun, tempfile::TempDir) {
    store_with(RunId::new().to_string(), JOBS).await
}

async fn store_with(id: String, jobs: u64) -> (Store, NewRun, tempfile::TempDir) {
    let folder = tempfile::tempdir().unwrap();
    let store = Store::open(&format!(
        "sqlite:{}",
        folder.path().join("m.sqlite").display()
    ))
    .await
    .unwrap();
    let run = NewRun {
        id,
        project: "fuzz".into(),
        agents: 2,
        jobs,
        tune: None,
        relaunch_of: None,
        settings: json!({}),
        name: None,
        tags: Vec::new(),
    };
    store.register_run(&run, 1_000).await.unwrap();
    (store, run, folder)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/corpus/ingest/regressions.txt",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_batch_is_stored_or_refused_and_the_run_stays_readable(
        batches in prop::collection::vec(prop::collection::vec(events(), 0..12), 1..4),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (store, run, _folder) = store_with_run().await;
            for events in batches {
                let batch = EventBatch {
                    v: WIRE_VERSION,
                    batch_id: uuid::Uuid::new_v4(),
                    run_id: RunId::parse(&run.id).unwrap(),
                    events,
                };
                // Stored or refused; either way, never a panic.
                let _ = store.ingest(&batch).await;
            }
            let read = store.run(&run.id, 1_000_000).await;
            prop_assert!(read.is_ok(), "the run cannot be read after ingest: {read:?}");
            let jobs = store
                .jobs(&run.id, &Default::default(), None, 50)
                .await;
            prop_assert!(jobs.is_ok(), "its jobs cannot be read: {jobs:?}");
            Ok(())
        })?;
    }
}

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/ingest");

#[tokio::test]
async fn every_corpus_batch_is_read_and_stored_or_refused_and_the_run_stays_readable() {
    let mut files: Vec<_> = std::fs::read_dir(CORPUS)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
        })
        .collect();
    files.sort();
    assert!(files.len() >= 4, "the corpus at {CORPUS} is missing");
    let (store, run, _folder) = store_with("corpus-run".into(), 1).await;
    for path in files {
        let bytes = std::fs::read(&path).unwrap();
        let batch: EventBatch = armada_core::wire::decode(&bytes, "an event batch")
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        let stored = store.ingest(&batch).await;
        if path.ends_with("a_job_from_start_to_success.json") {
            assert!(
                stored.as_ref().is_ok_and(|ingested| ingested.stored),
                "{stored:?}"
            );
        }
        store
            .run(&run.id, 1_000_000)
            .await
            .unwrap_or_else(|error| panic!("after {}: {error}", path.display()));
        store
            .jobs(&run.id, &Default::default(), None, 50)
            .await
            .unwrap_or_else(|error| panic!("after {}: {error}", path.display()));
    }
    let read = store.run(&run.id, 1_000_000).await.unwrap();
    assert_eq!(read.counts.succeeded, 1, "{read:?}");
    // The events about jobs the run does not have were stored, and made no job.
    let unknown = store.job(&run.id, 99).await;
    assert!(
        matches!(unknown, Err(armada_monitor::Error::UnknownJob { .. })),
        "{unknown:?}"
    );
    let jobs = store
        .jobs(&run.id, &Default::default(), None, 50)
        .await
        .unwrap();
    assert_eq!(jobs.items.len(), 1, "{jobs:?}");
}

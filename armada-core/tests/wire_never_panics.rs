//! Fuzzing the wire, with proptest (cargo-fuzz needs a nightly toolchain): whatever bytes
//! arrive where a record is read (a queue message, a config store value, an event batch),
//! `wire::decode` gives the record or an error, without panicking, hanging, or allocating more
//! than a small multiple of the input. What decodes re-encodes to itself, and what an agent
//! computes from it (time limits, retry delays) stays in range.
//!
//! The checked-in corpus `tests/corpus/wire/` seeds the inputs: each file is decoded as it is,
//! and mutated (bits flipped, bytes cut, inserted and repeated, numbers pushed to extremes).
//! A failing input proptest finds is kept in `tests/corpus/wire/regressions.txt` and replayed
//! first on every run; check it in with the fix. `PROPTEST_CASES=100000` fuzzes for longer.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

#[path = "support/bounds.rs"]
mod bounds;
#[path = "support/mutation.rs"]
mod mutation;

use std::fmt::Debug;
use std::time::Duration;

use bounds::Bounds;

use armada_core::backend::{FinishedRun, RunRecord};
use armada_core::wire::{
    self, AgentConfigRecord, EventBatch, JobMessage, JobResult, Versioned, WIRE_VERSION,
};
use armada_core::{Error, JobId, RunId};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/wire");

/// A decode holds at most 64 times its input on the heap, plus 256 KiB.
const BOUNDS: Bounds = Bounds {
    bytes_per_input_byte: 64,
    fixed_allowance: 256 * 1024,
    hang: Duration::from_secs(5),
};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/corpus/wire/regressions.txt",
        ))),
        ..ProptestConfig::default()
    }
}

/// The corpus files, by name.
fn corpus() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(CORPUS)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
        })
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    assert!(files.len() >= 8, "the corpus at {CORPUS} is missing");
    files
}

/// Decodes `bytes` as `T`: a record of this build's version that re-encodes to itself, or a
/// decode error.
fn decoded<T>(bytes: &[u8], what: &'static str) -> Result<Option<T>, TestCaseError>
where
    T: DeserializeOwned + Serialize + Versioned + PartialEq + Debug,
{
    match wire::decode::<T>(bytes, what) {
        Ok(record) => {
            prop_assert_eq!(record.version(), WIRE_VERSION);
            let encoded = serde_json::to_vec(&record).unwrap();
            let again = wire::decode::<T>(&encoded, what);
            prop_assert!(
                again.as_ref().is_ok_and(|again| *again == record),
                "{:?} re-encoded as {} reads back as {:?}",
                record,
                String::from_utf8_lossy(&encoded),
                again
            );
            Ok(Some(record))
        }
        Err(Error::Decode { what: said, .. }) => {
            prop_assert_eq!(said, what);
            Ok(None)
        }
        Err(other) => Err(TestCaseError::fail(format!(
            "only a decode error is expected, got {other:?}"
        ))),
    }
}

/// Reads `bytes` as every record of the wire, and uses what decodes as an agent would.
fn read_as_every_record(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Some(config) = decoded::<AgentConfigRecord>(bytes, "an agent config")? {
        let limits = config.limits;
        // The watchdog's deadline and every retry delay stay representable.
        let _ = limits.job_timeout() + Duration::from_secs(2);
        for attempt in [0, 1, 2, 33, u32::MAX] {
            prop_assert!(limits.retry_delay(attempt) <= Duration::from_millis(u64::MAX));
        }
    }
    if let Some(message) = decoded::<JobMessage>(bytes, "a job message")? {
        // Its payload may still be no JSON value (a lone surrogate escape passes the raw
        // text's check): the agent fails that job with serde's error, which must not panic.
        let _ = serde_json::from_str::<Value>(message.payload.get());
    }
    decoded::<JobResult>(bytes, "a job result")?;
    decoded::<EventBatch>(bytes, "an event batch")?;
    decoded::<RunRecord>(bytes, "a run record")?;
    decoded::<FinishedRun>(bytes, "a finished run")?;
    Ok(())
}

/// Runs [`read_as_every_record`] within the time and memory bounds.
fn check_bounded(bytes: &[u8]) -> Result<(), TestCaseError> {
    BOUNDS.check("decoding", bytes.len(), || read_as_every_record(bytes))
}

#[test]
fn every_corpus_file_reads_as_what_it_holds() {
    for (name, bytes) in corpus() {
        check_bounded(&bytes).unwrap_or_else(|error| panic!("{name}: {error}"));
        let reads = |read: &dyn Fn(&[u8]) -> bool| read(&bytes);
        let expected = match name.split('.').next().unwrap() {
            "job_message" | "job_message_retried" => {
                reads(&|b| wire::decode::<JobMessage>(b, "a job message").is_ok())
            }
            "agent_config" | "agent_config_extremes" => {
                reads(&|b| wire::decode::<AgentConfigRecord>(b, "an agent config").is_ok())
            }
            "job_result" | "job_result_failed" => {
                reads(&|b| wire::decode::<JobResult>(b, "a job result").is_ok())
            }
            "event_batch" => reads(&|b| wire::decode::<EventBatch>(b, "an event batch").is_ok()),
            "run_record" => reads(&|b| wire::decode::<RunRecord>(b, "a run record").is_ok()),
            "finished_run" => reads(&|b| wire::decode::<FinishedRun>(b, "a finished run").is_ok()),
            "other_version" => {
                let refused = wire::decode::<JobMessage>(&bytes, "a job message").unwrap_err();
                refused.to_string().contains("wire version 2")
            }
            other => panic!("{other}: a corpus file this test does not know"),
        };
        assert!(expected, "{name} does not read as what it holds");
    }
}

fn mutated_corpus() -> impl Strategy<Value = Vec<u8>> {
    let seeds: Vec<Vec<u8>> = corpus().into_iter().map(|(_, bytes)| bytes).collect();
    (
        prop::sample::select(seeds),
        prop::collection::vec(mutation::any_mutation(), 1..6),
    )
        .prop_map(|(seed, changes)| changes.iter().fold(seed, mutation::apply))
}

/// Any JSON, a few levels deep, with text that JSON must escape.
fn json_values() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,24}|[\u{0}-\u{1f}\"\\\\]{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map("\\PC{0,8}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Job messages as a publisher writes them, with any values.
fn job_messages() -> impl Strategy<Value = JobMessage> {
    (
        "[A-Za-z0-9_-]{1,64}",
        any::<u128>(),
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
        json_values(),
    )
        .prop_map(
            |(run, id, index, attempt, identity_retries, payload)| JobMessage {
                v: WIRE_VERSION,
                run_id: RunId::parse(&run).unwrap(),
                job_id: serde_json::from_value::<JobId>(Value::from(
                    uuid::Uuid::from_u128(id).to_string(),
                ))
                .unwrap(),
                index,
                attempt,
                identity_retries,
                payload: serde_json::value::to_raw_value(&payload).unwrap().into(),
            },
        )
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn mutated_corpus_files_decode_or_are_refused(bytes in mutated_corpus()) {
        check_bounded(&bytes)?;
    }

    #[test]
    fn arbitrary_bytes_decode_or_are_refused(
        bytes in prop::collection::vec(any::<u8>(), 0..1024),
    ) {
        check_bounded(&bytes)?;
    }

    #[test]
    fn job_messages_with_any_values_read_back_as_written(message in job_messages()) {
        let encoded = serde_json::to_vec(&message).unwrap();
        let read = wire::decode::<JobMessage>(&encoded, "a job message");
        prop_assert!(read.as_ref().is_ok_and(|read| *read == message), "{:?}", read);
        check_bounded(&encoded)?;
    }
}

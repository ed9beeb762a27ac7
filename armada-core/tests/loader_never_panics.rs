//! Property tests: whatever bytes a project's files hold, building a plan returns a plan or
//! diagnostics, quickly, without panicking, overflowing the stack or allocating without bound.
//!
//! The checked-in corpus `tests/corpus/project/` (the examples' projects and one of quoted,
//! multi-line, CRLF and non-ASCII cells) seeds inputs too: each project builds as it is, and
//! mutated (any of its files changed as a fuzzer would) it builds or is refused, within a
//! bounded time and memory. A failing input is kept in `tests/corpus/project/regressions.txt`
//! and replayed first; check it in with the fix.
//!
//! Inputs that currently crash the whole process (a stack overflow or a failed allocation
//! aborts, it does not panic) run in a child process of this test binary, so the other
//! properties still report.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/bounds.rs"]
mod bounds;
#[path = "support/mutation.rs"]
mod mutation;

use armada_core::project::NamedFile;
use armada_core::{Diagnostic, Error, Plan, ProjectFiles, RunOverrides};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde::Deserialize;
use serde_json::{Map, Value};

const TEMPLATE: &str = "config/config_template.json";
const TUNE: &str = "config/config_local.json";
const AGENT_CSV: &str = "config/data_agent.csv";
const JOB_CSV: &str = "config/data_job.csv";

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/project");

/// Above this many jobs the JSON lines are not written (a valid random plan could ask for more
/// than a test should print).
const MAX_JOBS_TO_WRITE: u64 = 1_000;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/corpus/project/regressions.txt",
        ))),
        ..ProptestConfig::default()
    }
}

fn files(
    template: Vec<u8>,
    tune: Option<Vec<u8>>,
    agent_csv: Option<Vec<u8>>,
    job_csv: Option<Vec<u8>>,
) -> ProjectFiles {
    ProjectFiles {
        template: NamedFile::new(TEMPLATE, template),
        tune: tune.map(|tune| NamedFile::new(TUNE, tune)),
        tune_name: TUNE.to_owned(),
        agent_csv: agent_csv.map(|csv| NamedFile::new(AGENT_CSV, csv)),
        job_csv: job_csv.map(|csv| NamedFile::new(JOB_CSV, csv)),
    }
}

/// A typed agent config and payload, so type errors deep inside merged messages are reached.
#[derive(Debug, Deserialize)]
#[allow(dead_code, reason = "only deserialization is exercised")]
struct TypedConfig {
    #[serde(default)]
    a: Option<u32>,
    #[serde(default)]
    b: Option<Vec<String>>,
    #[serde(default)]
    c: Option<BTreeMap<String, bool>>,
}

/// Builds the plan both untyped and typed, and checks what a result must look like.
fn check(files: &ProjectFiles, overrides: &RunOverrides) -> Result<(), TestCaseError> {
    check_result(Plan::build::<Value, Value>(files, overrides))?;
    check_result(Plan::build::<TypedConfig, TypedConfig>(files, overrides))
}

fn check_result(result: armada_core::Result<Plan>) -> Result<(), TestCaseError> {
    match result {
        Ok(plan) => {
            prop_assert!(plan.agents() >= 1);
            prop_assert_eq!(plan.settings().jobs, Some(plan.jobs()));
            for index in 0..plan.agents() {
                prop_assert!(plan.agent_message(index).is_object());
            }
            for index in 0..plan.jobs().min(MAX_JOBS_TO_WRITE) {
                let payload = plan.job_payload(index).get();
                prop_assert!(
                    payload.starts_with('{'),
                    "a job payload is an object: {}",
                    payload
                );
            }
            if plan.jobs() <= MAX_JOBS_TO_WRITE {
                let mut out = Vec::new();
                plan.write_json_lines(&mut out)?;
                let lines = String::from_utf8(out)?.lines().count() as u64;
                prop_assert_eq!(lines, u64::from(plan.agents()) + plan.jobs());
            }
        }
        Err(Error::Invalid(diagnostics)) => {
            prop_assert!(!diagnostics.is_empty());
            for diagnostic in &diagnostics {
                prop_assert!(
                    [TEMPLATE, TUNE, AGENT_CSV, JOB_CSV].contains(&diagnostic.file.as_str()),
                    "unexpected file in {:?}",
                    diagnostic
                );
                prop_assert!(!diagnostic.message.is_empty());
                prop_assert_ne!(
                    diagnostic.line,
                    Some(0),
                    "lines are 1-based: {:?}",
                    diagnostic
                );
            }
            let text = Error::Invalid(diagnostics).to_string();
            prop_assert!(text.starts_with("the project has "));
        }
        Err(other) => prop_assert!(false, "only Error::Invalid is expected, got {:?}", other),
    }
    Ok(())
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..400)
}

/// Bounded overrides: whatever the template says, a plan cannot ask for many agents or jobs.
fn bounded_overrides() -> impl Strategy<Value = RunOverrides> {
    (
        1u32..4,
        0u64..40,
        proptest::option::of(0u32..5),
        proptest::option::of(-1.0f64..100.0),
    )
        .prop_map(
            |(agents, jobs, max_attempts, job_timeout_secs)| RunOverrides {
                agents: Some(agents),
                jobs: Some(jobs),
                max_attempts,
                job_timeout_secs,
            },
        )
}

/// Text made of the characters that steer the CSV reader, cell parser and index checks.
fn csv_shaped(index_column: &'static str) -> impl Strategy<Value = String> {
    let prefix = prop_oneof![
        3 => Just(format!("{index_column},")),
        1 => Just(format!("\u{feff}{index_column},")),
        1 => Just(String::new()),
    ];
    (prefix, "[,\"{}\\[\\]\n0-9a targd_jobs.:-]{0,300}")
        .prop_map(|(prefix, body)| format!("{prefix}{body}"))
}

fn quote(cell: &str) -> String {
    format!("\"{}\"", cell.replace('"', "\"\""))
}

/// A well-formed CSV with random headers, indexes and cells: every row reaches the cell parser
/// and the merge.
fn structured_csv(index_column: &'static str) -> impl Strategy<Value = String> {
    let header = "[a-c]{1,2}(\\.[a-c]{1,2}){0,2}|a\\.|";
    let index = "[0-9]{1,2}|-1|x|";
    let cell = prop_oneof![
        "[0-9]{1,3}",
        "[a-z ]{0,6}",
        "true|false|null",
        "\\{\"[a-c]\": ?[0-9]\\}",
        "\\[[0-9, ]{0,6}\\]",
        "[\"{}\\[\\],:0-9a ]{0,12}",
    ];
    (1usize..4).prop_flat_map(move |width| {
        let headers = proptest::collection::vec(header, width);
        let rows = proptest::collection::vec(
            (index, proptest::collection::vec(cell.clone(), width)),
            0..6,
        );
        (headers, rows).prop_map(move |(headers, rows)| {
            let mut csv = index_column.to_owned();
            for header in &headers {
                csv.push(',');
                csv.push_str(&quote(header));
            }
            csv.push('\n');
            for (index, cells) in rows {
                csv.push_str(&index);
                for cell in cells {
                    csv.push(',');
                    csv.push_str(&quote(&cell));
                }
                csv.push('\n');
            }
            csv
        })
    })
}

/// Small JSON values, with placeholders and dotted keys; integers are small so a template can
/// never ask for a huge number of agents or jobs.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-5i64..100).prop_map(Value::from),
        (-10.0f64..10.0).prop_map(Value::from),
        "[a-z$_ ]{0,8}".prop_map(Value::from),
        "\\$env_[A-C]{0,2}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-c]{1,2}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn json_object(keys: &'static str) -> impl Strategy<Value = Value> {
    proptest::collection::btree_map(keys, json_value(), 0..5)
        .prop_map(|map| Value::Object(map.into_iter().collect::<Map<String, Value>>()))
}

/// A template that usually parses: a run message with small counts (or placeholders), random
/// default messages, and sometimes a stray key.
fn template() -> impl Strategy<Value = Vec<u8>> {
    let run_message = (
        prop_oneof![
            Just(None),
            (0i64..4).prop_map(|agents| Some(Value::from(agents))),
            Just(Some(Value::from("$env_A"))),
            json_value().prop_map(Some),
        ],
        prop_oneof![
            Just(None),
            (0i64..30).prop_map(|jobs| Some(Value::from(jobs))),
            json_value().prop_map(Some),
        ],
        json_object("max_attempts|job_timeout_secs|retry_backoff_secs|image|resources|zz"),
    )
        .prop_map(|(agents, jobs, rest)| {
            let mut map = match rest {
                Value::Object(map) => map,
                _ => Map::new(),
            };
            if let Some(agents) = agents {
                map.insert("agents".to_owned(), agents);
            }
            if let Some(jobs) = jobs {
                map.insert("jobs".to_owned(), jobs);
            }
            Value::Object(map)
        });
    (
        run_message,
        prop_oneof![json_object("[a-c]{1,2}"), json_value()],
        prop_oneof![json_object("[a-c]{1,2}"), json_value()],
        proptest::option::of(json_value()),
    )
        .prop_map(|(run_message, agent, job, extra)| {
            let mut template = Map::new();
            template.insert("run_message".to_owned(), run_message);
            template.insert("default_agent_message".to_owned(), agent);
            template.insert("default_job_message".to_owned(), job);
            if let Some(extra) = extra {
                template.insert("extra".to_owned(), extra);
            }
            Value::Object(template).to_string().into_bytes()
        })
}

fn tune() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        Just(None),
        json_object("[A-C]{1,2}").prop_map(|tune| Some(tune.to_string().into_bytes())),
        bytes().prop_map(Some),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(
        template in bytes(),
        tune in proptest::option::of(bytes()),
        agent_csv in proptest::option::of(bytes()),
        job_csv in proptest::option::of(bytes()),
        overrides in bounded_overrides(),
    ) {
        check(&files(template, tune, agent_csv, job_csv), &overrides)?;
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_prefix_never_panic(
        template in bytes(),
        agent_csv in bytes(),
        job_csv in bytes(),
        overrides in bounded_overrides(),
    ) {
        let mut valid = br#"{"run_message": {"agents": 1, "jobs": 2}}"#.to_vec();
        valid.extend(template);
        let mut agent = b"targetted_agent,a\n".to_vec();
        agent.extend(agent_csv);
        let mut job = b"targetted_job,a.b,c\n0,1,2\n".to_vec();
        job.extend(job_csv);
        check(&files(valid, None, Some(agent), Some(job)), &overrides)?;
    }

    #[test]
    fn csv_shaped_text_never_panics(
        agent_csv in proptest::option::of(csv_shaped("targetted_agent")),
        job_csv in proptest::option::of(csv_shaped("targetted_job")),
        jobs_in_template in any::<bool>(),
    ) {
        let template = if jobs_in_template {
            r#"{"run_message": {"agents": 2, "jobs": 5}, "default_job_message": {"a": {"b": 1}}}"#
        } else {
            r#"{"run_message": {"agents": 2}, "default_agent_message": {"a": [1]}}"#
        };
        let files = files(
            template.as_bytes().to_vec(),
            None,
            agent_csv.map(String::into_bytes),
            job_csv.map(String::into_bytes),
        );
        check(&files, &RunOverrides::default())?;
    }

    #[test]
    fn structured_projects_never_panic(
        template in template(),
        tune in tune(),
        agent_csv in proptest::option::of(structured_csv("targetted_agent")),
        job_csv in proptest::option::of(structured_csv("targetted_job")),
    ) {
        let files = files(
            template,
            tune,
            agent_csv.map(String::into_bytes),
            job_csv.map(String::into_bytes),
        );
        check(&files, &RunOverrides::default())?;
    }
}

/// A corpus project: its four files' bytes, each absent when the project has none.
type Seed = [Option<Vec<u8>>; 4];

fn corpus() -> Vec<(String, Seed)> {
    let mut seeds: Vec<(String, Seed)> = std::fs::read_dir(CORPUS)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir())
        .map(|folder| {
            let read = |name: &str| std::fs::read(folder.join(name)).ok();
            let seed = [
                read("config_template.json"),
                read("config_local.json"),
                read("data_agent.csv"),
                read("data_job.csv"),
            ];
            (
                folder.file_name().unwrap().to_string_lossy().into_owned(),
                seed,
            )
        })
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 3, "the corpus at {CORPUS} is missing");
    seeds
}

fn seed_files([template, tune, agent_csv, job_csv]: Seed) -> ProjectFiles {
    files(template.unwrap_or_default(), tune, agent_csv, job_csv)
}

/// A plan holds at most 256 times its files on the heap while built, plus 4 MiB (the checks
/// write up to [`MAX_JOBS_TO_WRITE`] JSON lines).
const BOUNDS: bounds::Bounds = bounds::Bounds {
    bytes_per_input_byte: 256,
    fixed_allowance: 4 * 1024 * 1024,
    hang: Duration::from_secs(10),
};

/// [`check`] within time and memory bounds.
fn check_bounded(files: &ProjectFiles) -> Result<(), TestCaseError> {
    let size: usize = [
        Some(&files.template),
        files.tune.as_ref(),
        files.agent_csv.as_ref(),
        files.job_csv.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|file| file.contents.len())
    .sum();
    BOUNDS.check("planning", size, || check(files, &RunOverrides::default()))
}

#[test]
fn every_corpus_project_builds() {
    for (name, seed) in corpus() {
        let files = seed_files(seed);
        check_bounded(&files).unwrap_or_else(|error| panic!("{name}: {error}"));
        if let Err(error) = Plan::build::<Value, Value>(&files, &RunOverrides::default()) {
            panic!("{name} does not build: {error}");
        }
    }
}

fn mutated_corpus() -> impl Strategy<Value = ProjectFiles> {
    let seeds: Vec<Seed> = corpus().into_iter().map(|(_, seed)| seed).collect();
    let change = (0usize..4, mutation::any_mutation());
    (
        prop::sample::select(seeds),
        prop::collection::vec(change, 1..6),
    )
        .prop_map(|(mut seed, changes)| {
            for (file, change) in &changes {
                let bytes = seed[*file].take().unwrap_or_default();
                seed[*file] = Some(mutation::apply(bytes, change));
            }
            seed_files(seed)
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mutated_corpus_projects_build_or_are_refused(files in mutated_corpus()) {
        check_bounded(&files)?;
    }
}

#[test]
fn the_largest_job_count_costs_one_default_message() {
    let jobs = armada_core::project::MAX_JOBS;
    let template = format!(r#"{{"run_message": {{"agents": 1, "jobs": {jobs}}}}}"#);
    let files = files(
        template.into_bytes(),
        None,
        None,
        Some(b"targetted_job,a\n3,x\n".to_vec()),
    );
    let plan = Plan::build::<Value, Value>(&files, &RunOverrides::default()).unwrap();
    assert_eq!(plan.jobs(), jobs);
    assert_eq!(
        serde_json::from_str::<Value>(plan.job_payload(3).get()).unwrap(),
        serde_json::json!({"a": "x"})
    );
    assert!(std::sync::Arc::ptr_eq(
        plan.job_payload(0),
        plan.job_payload(jobs - 1)
    ));
}

#[test]
fn a_job_count_over_the_limit_is_refused() {
    let template = format!(
        r#"{{"run_message": {{"agents": 1, "jobs": {}}}}}"#,
        u64::MAX
    );
    let files = files(template.into_bytes(), None, None, None);
    let Err(Error::Invalid(diagnostics)) =
        Plan::build::<Value, Value>(&files, &RunOverrides::default())
    else {
        panic!("u64::MAX jobs must be refused");
    };
    let fields: Vec<Option<&str>> = diagnostics.iter().map(|d| d.field.as_deref()).collect();
    assert_eq!(fields, vec![Some("run_message.jobs")], "{diagnostics}");
}

// ---------------------------------------------------------------------------------------------
// Inputs that crash the process today, each run in a child process.

/// Selects the case `child_case` runs; unset in a normal test run.
const CHILD_ENV: &str = "ARMADA_CORE_LOADER_CHILD";

/// Runs one crash-prone case in a child process (this test binary, filtered to `child_case`,
/// with at most 4 GiB of address space on Unix) and fails with its output unless it exits
/// successfully within a minute.
fn run_in_child(case: &str) {
    let exe = std::env::current_exe().expect("the test binary has a path");
    let mut command = if cfg!(unix) {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg("ulimit -v 4194304 2>/dev/null; exec \"$0\" \"$@\"")
            .arg(exe);
        command
    } else {
        Command::new(exe)
    };
    let output = tempfile::tempfile().expect("a temporary file for the child's output");
    command
        .args(["child_case", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, case)
        .stdin(Stdio::null())
        .stdout(output.try_clone().expect("the output file can be shared"))
        .stderr(output.try_clone().expect("the output file can be shared"));
    let mut child = command
        .spawn()
        .expect("the test binary can be started again");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("the child can be waited for") {
            break Some(status);
        }
        if Instant::now() > deadline {
            child.kill().expect("the child can be killed");
            child.wait().expect("the killed child can be reaped");
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut output = output;
    let mut text = String::new();
    std::io::Seek::rewind(&mut output).expect("the output file can be rewound");
    std::io::Read::read_to_string(&mut output, &mut text).expect("the child's output can be read");
    match status {
        Some(status) if status.success() => {}
        Some(status) => panic!("case `{case}` crashed the process ({status}):\n{text}"),
        None => panic!("case `{case}` did not finish within a minute:\n{text}"),
    }
}

/// The body of the crash-prone cases; does nothing unless a parent test selected a case.
#[test]
fn child_case() {
    match std::env::var(CHILD_ENV).as_deref() {
        Ok("deep_dotted_header") => deep_dotted_header(),
        Ok("huge_agent_count") => huge_agent_count(),
        Ok(other) => panic!("unknown case {other}"),
        Err(_) => {}
    }
}

/// A 100 000-segment dotted header (`a.a.a…`, 200 KB) builds a 100 000-deep message.
fn deep_dotted_header() {
    let header = vec!["a"; 100_000].join(".");
    let files = files(
        br#"{"run_message": {"agents": 1, "jobs": 1}}"#.to_vec(),
        None,
        None,
        Some(format!("targetted_job,{header}\n0,1\n").into_bytes()),
    );
    match Plan::build::<Value, Value>(&files, &RunOverrides::default()) {
        Ok(plan) => drop(plan),
        Err(Error::Invalid(diagnostics)) => {
            let located: Vec<&Diagnostic> = diagnostics
                .iter()
                .filter(|d| d.file == JOB_CSV && d.line == Some(1) && d.column == Some(2))
                .collect();
            assert_eq!(located.len(), 1, "{diagnostics}");
        }
        Err(other) => panic!("{other}"),
    }
}

/// `agents: 4294967295` must be refused (or planned lazily), not materialized.
fn huge_agent_count() {
    let files = files(
        format!(
            r#"{{"run_message": {{"agents": {}, "jobs": 1}}}}"#,
            u32::MAX
        )
        .into_bytes(),
        None,
        None,
        None,
    );
    match Plan::build::<Value, Value>(&files, &RunOverrides::default()) {
        Ok(plan) => assert_eq!(plan.agents(), u32::MAX),
        Err(Error::Invalid(diagnostics)) => {
            let fields: Vec<Option<&str>> =
                diagnostics.iter().map(|d| d.field.as_deref()).collect();
            assert_eq!(fields, vec![Some("run_message.agents")], "{diagnostics}");
        }
        Err(other) => panic!("{other}"),
    }
}

#[test]
fn a_deeply_dotted_csv_header_does_not_crash_the_process() {
    run_in_child("deep_dotted_header");
}

#[test]
fn a_huge_agent_count_does_not_allocate_per_agent() {
    run_in_child("huge_agent_count");
}

//! `cargo xtask bench`: the scale of a run. Plans runs of 10,000, 100,000 and 1,000,000 jobs
//! from a project folder whose `data_job.csv` has a row per job, and publishes them through
//! `Orchestrator::launch` on the embedded backends, with the monitor in memory and with the
//! SQLite monitor (registering every job there is part of publishing). Each size runs in a
//! process of its own (this binary, `child ...`), so the peak resident set (`VmHWM`) is that
//! size's. Next to it, the plain libraries doing the least a plan and publish must: `csv`
//! reading the rows into JSON objects merged with the defaults, `serde_json` writing one
//! message per job into a `Vec`.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

mod support;

use armada::{Backends, Launcher, Orchestrator, Plan, ProjectFiles, RunOverrides, ScriptAgent};
use support::{Noop, status_kb, target, wanted};

const SIZES: [u64; 3] = [10_000, 100_000, 1_000_000];

/// Writes a project of `jobs` jobs, one CSV row each (its own URL and id).
fn write_project(folder: &Path, jobs: u64) {
    let config = folder.join("config");
    std::fs::create_dir_all(&config).unwrap();
    let template = serde_json::json!({
        "run_message": { "agents": 4, "jobs": jobs, "max_attempts": 1 },
        "default_job_message": { "url": "http://127.0.0.1/", "id": 0, "kind": "product" },
    });
    std::fs::write(config.join("config_template.json"), template.to_string()).unwrap();
    let mut csv = String::with_capacity(jobs as usize * 48);
    csv.push_str("targetted_job,url,id\n");
    for job in 0..jobs {
        csv.push_str(&format!("{job},http://shop.test/product/{job},{job}\n"));
    }
    std::fs::write(config.join("data_job.csv"), csv).unwrap();
}

/// In the child: plans and publishes, then prints `plan_ms publish_ms peak_kb`.
fn child_armada(project: &Path, monitor: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let files = ProjectFiles::read(project, &armada::Tune::Local).unwrap();
    let plan = Plan::for_script::<Noop>(&files, &RunOverrides::default()).unwrap();
    drop(files);
    let planned = started.elapsed();
    let published = runtime.block_on(async {
        let orchestrator = Orchestrator::new(
            Backends::connect("memory://", "memory://", monitor)
                .await
                .unwrap(),
            Launcher::InProcess(Arc::new(ScriptAgent::new(Noop))),
        );
        let started = Instant::now();
        let handle = orchestrator.launch(&plan).await.unwrap();
        let published = started.elapsed();
        // Publishing is what is measured: stop the agents now.
        handle.control().abort();
        drop(handle);
        published
    });
    println!(
        "{} {} {}",
        planned.as_secs_f64() * 1000.0,
        published.as_secs_f64() * 1000.0,
        status_kb("VmHWM")
    );
    // The run's queue and records need no orderly teardown: the process ends here.
    std::process::exit(0);
}

/// In the child: the plain libraries' share of the same work.
fn child_plain(project: &Path) {
    let started = Instant::now();
    let config = project.join("config");
    let template: serde_json::Value =
        serde_json::from_slice(&std::fs::read(config.join("config_template.json")).unwrap())
            .unwrap();
    let defaults = template["default_job_message"].as_object().unwrap().clone();
    let mut reader = csv::Reader::from_path(config.join("data_job.csv")).unwrap();
    let headers = reader.headers().unwrap().clone();
    let mut payloads = Vec::new();
    for record in reader.records() {
        let record = record.unwrap();
        let mut payload = defaults.clone();
        for (header, value) in headers.iter().zip(record.iter()).skip(1) {
            let value = serde_json::from_str(value)
                .unwrap_or_else(|_| serde_json::Value::String(value.to_owned()));
            payload.insert(header.to_owned(), value);
        }
        payloads.push(Arc::new(serde_json::Value::Object(payload)));
    }
    let planned = started.elapsed();
    let started = Instant::now();
    let messages: Vec<Vec<u8>> = payloads
        .iter()
        .enumerate()
        .map(|(index, payload)| {
            serde_json::to_vec(
                &serde_json::json!({ "index": index, "attempt": 1, "payload": payload }),
            )
            .unwrap()
        })
        .collect();
    let published = started.elapsed();
    assert_eq!(messages.len(), payloads.len());
    println!(
        "{} {} {}",
        planned.as_secs_f64() * 1000.0,
        published.as_secs_f64() * 1000.0,
        status_kb("VmHWM")
    );
}

struct Measure {
    plan_ms: f64,
    publish_ms: f64,
    peak_mb: f64,
}

impl Measure {
    fn total_ms(&self) -> f64 {
        self.plan_ms + self.publish_ms
    }
}

fn measure(kind: &str, project: &Path, monitor: &str) -> Measure {
    let output = Command::new(std::env::current_exe().unwrap())
        .arg("child")
        .arg(kind)
        .arg(project)
        .arg(monitor)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{kind} child failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let numbers: Vec<f64> = text
        .split_whitespace()
        .map(|value| value.parse().unwrap())
        .collect();
    Measure {
        plan_ms: numbers[0],
        publish_ms: numbers[1],
        peak_mb: numbers[2] / 1024.0,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        let project = Path::new(&args[3]);
        match args[2].as_str() {
            "plain" => child_plain(project),
            _ => child_armada(project, &args[4]),
        }
        return;
    }
    let folder = tempfile::tempdir().unwrap();
    println!(
        "Plan (read config/, typed checks, one payload per CSV row) and publish (`launch`: run \
         record, agent configs, the run registered with the monitor as one row, the jobs handed \
         to the queue as a count and a builder: each message is built when an agent takes it) \
         with the embedded queue and store, each size in a process of its own; peak memory is \
         that process's `VmHWM`. Plain: `csv` + `serde_json` reading the same rows into JSON \
         objects and writing one message per job.\n"
    );
    println!(
        "| jobs | monitor | plan ms | publish ms | total ms | ms per 1,000 jobs | peak MB | plain ms | plain peak MB | armada / plain time |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut at_million = Vec::new();
    for jobs in SIZES {
        if !wanted(&jobs.to_string()) {
            continue;
        }
        let began = Instant::now();
        let project = folder.path().join(format!("project-{jobs}"));
        write_project(&project, jobs);
        let plain = measure("plain", &project, "");
        let sqlite = format!(
            "sqlite:{}",
            folder
                .path()
                .join(format!("monitor-{jobs}.sqlite"))
                .display()
        );
        for (name, monitor) in [("memory", "memory://"), ("SQLite", sqlite.as_str())] {
            let armada = measure("armada", &project, monitor);
            println!(
                "| {jobs} | {name} | {:.0} | {:.0} | {:.0} | {:.1} | {:.0} | {:.0} | {:.0} | {:.2} |",
                armada.plan_ms,
                armada.publish_ms,
                armada.total_ms(),
                armada.total_ms() / (jobs as f64 / 1000.0),
                armada.peak_mb,
                plain.total_ms(),
                plain.peak_mb,
                armada.total_ms() / plain.total_ms(),
            );
            if jobs == 1_000_000 {
                at_million.push((name, armada));
            }
        }
        let _ = std::fs::remove_dir_all(&project);
        eprintln!("scale {jobs}: {:.1} s", began.elapsed().as_secs_f64());
    }
    println!(
        "\nLinear growth shows as a flat \"ms per 1,000 jobs\" column. The SQLite monitor's \
         file is a new one per size.\n"
    );
    for (name, measure) in at_million {
        target(
            &format!("1,000,000 jobs planned and published (monitor: {name}) in under 10 s"),
            measure.total_ms() < 10_000.0,
            &format!("{:.1} s", measure.total_ms() / 1000.0),
        );
        target(
            &format!("1,000,000 jobs planned and published (monitor: {name}) in under 1 GiB"),
            measure.peak_mb < 1024.0,
            &format!("{:.0} MB peak", measure.peak_mb),
        );
    }
}

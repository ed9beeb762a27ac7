//! scratch
use armada_core::project::NamedFile;
use armada_core::{Plan, ProjectFiles, RunOverrides};
use serde_json::Value;

fn files(template: &str, job_csv: Option<String>) -> ProjectFiles {
    ProjectFiles {
        template: NamedFile::new("t.json", template),
        tune: None,
        tune_name: "tune.json".into(),
        agent_csv: None,
        job_csv: job_csv.map(|c| NamedFile::new("job.csv", c)),
    }
}

#[test]
fn deep_header() {
    let depth: usize = std::env::var("DEPTH").unwrap().parse().unwrap();
    let header = vec!["a"; depth].join(".");
    let csv = format!("targetted_job,{header}\n0,1\n");
    let r = Plan::build::<Value, Value>(&files(r#"{"run_message":{"agents":1,"jobs":1}}"#, Some(csv)), &RunOverrides::default());
    println!("ok {}", r.is_ok());
}

#[test]
fn bom_only() {
    for csv in ["\u{feff}", "\u{feff}\n", "\u{feff}\r\n"] {
        let r = Plan::build::<Value, Value>(&files(r#"{"run_message":{"agents":1,"jobs":1}}"#, Some(csv.into())), &RunOverrides::default());
        println!("{csv:?} {:?}", r.map(|_| ()));
    }
}

#[test]
fn huge_agents() {
    let agents: u64 = std::env::var("AGENTS").unwrap().parse().unwrap();
    let t = std::time::Instant::now();
    let r = Plan::build::<Value, Value>(&files(&format!(r#"{{"run_message":{{"agents":{agents},"jobs":1}}}}"#), None), &RunOverrides::default());
    println!("ok {} {:?}", r.is_ok(), t.elapsed());
}

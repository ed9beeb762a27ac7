//! What the page tests share: a script that probes the agent's page, a run of it on one agent,
//! and the shop it visits.

// Each test binary uses its own part.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use armada::browser::{BrowserAgent, BrowserJob};
use armada::prelude::*;
use armada::{
    Backends, FollowEvent, Launcher, Orchestrator, Plan, ProjectFiles, RunOverrides, ScriptAgent,
};
use catalog::site;
use chromiumoxide::cdp::browser_protocol::page::CrashParams;
use serde::Deserialize;
use serde_json::{Value, json};

/// What a job does on the shop's product page `id`.
#[derive(Debug, Deserialize)]
pub struct Step {
    action: String,
    id: u32,
    base: String,
}

/// Visits a product page, then does its step's action, and tells which tab it ran in and what
/// cookies the page saw on arrival.
pub struct Probe;

impl Script for Probe {
    type Agent = BrowserAgent;
    type Job = BrowserJob<Step>;
    type Output = Value;

    async fn run(
        &self,
        _agent: &mut BrowserAgent,
        job: &mut Self::Job,
    ) -> Result<Value, ScriptError> {
        let step = &job.payload;
        job.goto(&format!("{}/product/{}", step.base, step.id))
            .await?;
        let cookie = job.evaluate("document.cookie").await?;
        let target = job.page.target_id().as_ref().to_owned();
        match step.action.as_str() {
            "visit" => {}
            "set_cookie" => {
                job.evaluate("document.cookie = 'visited=yes; path=/'; true")
                    .await?;
            }
            "dialog" => {
                job.evaluate("setTimeout(() => alert('hello'), 0); true")
                    .await?;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            "crash" => {
                // The renderer dies before it answers.
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    job.page.execute(CrashParams::default()),
                )
                .await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            "download" => {
                let link = "const a = document.createElement('a'); a.href = '/download'; \
                            a.download = 'file.txt'; document.body.append(a); a.click(); true";
                job.evaluate(link).await?;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            "wait" => {
                job.evaluate("setTimeout(() => { window.ready = 42; }, 300); true")
                    .await?;
                let ready = job.wait_until("window.ready").await?;
                return Ok(json!({ "target": target, "ready": ready }));
            }
            "never" => {
                job.wait_until("window.never_set").await?;
            }
            "log_in" => {
                job.goto(&format!("{}/login", step.base)).await?;
                job.fill("#user", "old text").await?;
                job.fill("#user", "grace").await?;
                job.fill("#password", "secret").await?;
                job.click("#log-in").await?;
                let welcome = job.text("#welcome").await?;
                return Ok(json!({ "target": target, "welcome": welcome }));
            }
            "fail" => return Err(ScriptError::fail("this step fails")),
            other => return Err(ScriptError::fail(format!("unknown action {other}"))),
        }
        Ok(json!({ "target": target, "cookie": cookie }))
    }
}

/// Runs `actions` in order on one agent whose `browser` settings are `browser`; returns each
/// job's result by index.
pub async fn run(base: &str, browser: Value, actions: &[&str]) -> BTreeMap<u64, Value> {
    let template = json!({
        "run_message": { "agents": 1, "jobs": actions.len(), "max_attempts": 1 },
        "default_agent_message": { "browser": browser },
        "default_job_message": { "base": base },
    });
    let rows: String = actions
        .iter()
        .enumerate()
        .map(|(job, action)| format!("{job},{action},{}\n", job + 1))
        .collect();
    let files = ProjectFiles::from_template(template.to_string())
        .with_job_csv(format!("targetted_job,action,id\n{rows}"));
    let plan = Plan::for_script::<Probe>(&files, &RunOverrides::default()).unwrap();
    let orchestrator = Orchestrator::new(
        Backends::embedded().await.unwrap(),
        Launcher::InProcess(Arc::new(ScriptAgent::new(Probe))),
    );
    let handle = orchestrator.launch(&plan).await.unwrap();
    let mut results = BTreeMap::new();
    handle
        .follow(|event| {
            if let FollowEvent::Result(result) = event {
                results.insert(result.index, serde_json::to_value(result).unwrap());
            }
        })
        .await
        .unwrap();
    results
}

/// Serves the shop, plus a file that downloads, on 127.0.0.1.
pub async fn serve_shop() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shop = site::router_with_stock_delay(0).route(
        "/download",
        axum::routing::get(|| async {
            (
                [(
                    axum::http::header::CONTENT_DISPOSITION,
                    "attachment; filename=\"file.txt\"",
                )],
                "a file",
            )
        }),
    );
    tokio::spawn(async move { axum::serve(listener, shop).await });
    format!("http://{address}")
}

pub fn target(results: &BTreeMap<u64, Value>, job: u64) -> &str {
    results[&job]["output"]["target"]
        .as_str()
        .unwrap_or_else(|| panic!("job {job}: {}", results[&job]))
}

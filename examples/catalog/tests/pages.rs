//! The browser agent's page across jobs, with a real Chromium and agents as tasks of this
//! process: a page reused by default and replaced after a dialog, a crash, a download or an
//! attempt that did not succeed; data cleared between jobs on request; a tab per job with
//! `browser.pages: new_per_job`.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

mod support;

use armada::{Plan, ProjectFiles, RunOverrides};
use serde_json::json;
use support::{Probe, run, serve_shop, target};

#[tokio::test]
async fn a_page_is_reused_until_it_is_unfit_then_replaced() {
    let base = serve_shop().await;
    let actions = [
        "visit", "visit", "dialog", "visit", "fail", "visit", "crash", "visit", "download", "visit",
    ];
    let results = run(&base, json!({}), &actions).await;
    assert_eq!(results.len(), actions.len());
    for (job, action) in actions.iter().enumerate() {
        let expected = if *action == "fail" {
            "failed"
        } else {
            "succeeded"
        };
        assert_eq!(
            results[&(job as u64)]["status"],
            expected,
            "job {job} ({action}): {}",
            results[&(job as u64)]
        );
    }
    // Jobs 0-2 share a page; the dialog of job 2, the failure of job 4, the crash of job 6 and
    // the download of job 8 each give the next job a fresh one.
    assert_eq!(target(&results, 0), target(&results, 1));
    assert_eq!(target(&results, 1), target(&results, 2));
    for (unfit, next) in [(2, 3), (4, 5), (6, 7), (8, 9)] {
        if unfit != 4 {
            assert_ne!(
                target(&results, unfit),
                target(&results, next),
                "after job {unfit} ({})",
                actions[unfit as usize]
            );
        }
    }
    assert_ne!(
        target(&results, 3),
        target(&results, 5),
        "the failed job 4 ran on job 3's page"
    );
    assert_eq!(
        target(&results, 5),
        target(&results, 6),
        "a visit leaves the page fit"
    );
}

#[tokio::test]
async fn cookies_stay_between_jobs_unless_the_project_clears_them() {
    let base = serve_shop().await;
    let kept = run(&base, json!({}), &["set_cookie", "visit"]).await;
    assert_eq!(kept[&1]["output"]["cookie"], "visited=yes", "{kept:?}");
    assert_eq!(target(&kept, 0), target(&kept, 1));
    let cleared = run(
        &base,
        json!({ "clear_between_jobs": ["cookies", "storage", "cache"] }),
        &["set_cookie", "visit"],
    )
    .await;
    assert_eq!(cleared[&1]["output"]["cookie"], "", "{cleared:?}");
    assert_eq!(
        target(&cleared, 0),
        target(&cleared, 1),
        "clearing keeps the page"
    );
}

#[tokio::test]
async fn new_per_job_gives_every_job_its_own_tab() {
    let base = serve_shop().await;
    let results = run(
        &base,
        json!({ "pages": "new_per_job" }),
        &["visit", "visit", "visit"],
    )
    .await;
    let targets: std::collections::BTreeSet<&str> =
        (0..3).map(|job| target(&results, job)).collect();
    assert_eq!(targets.len(), 3, "{results:?}");
}

#[tokio::test]
async fn an_unknown_page_mode_is_refused_with_its_field() {
    let template = json!({
        "run_message": { "agents": 1, "jobs": 1 },
        "default_agent_message": { "browser": { "pages": "recycle" } },
        "default_job_message": { "base": "http://127.0.0.1:9", "action": "visit", "id": 1 },
    });
    let files = ProjectFiles::from_template(template.to_string());
    let error = Plan::for_script::<Probe>(&files, &RunOverrides::default())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("recycle") && error.contains("new_per_job"),
        "{error}"
    );
}

#[tokio::test]
async fn waits_end_when_the_page_is_ready_and_carry_through_a_form_s_navigation() {
    let base = serve_shop().await;
    let results = run(
        &base,
        json!({ "page_load_timeout_secs": 2 }),
        &["wait", "log_in", "never"],
    )
    .await;
    assert_eq!(results[&0]["output"]["ready"], 42, "{results:?}");
    assert_eq!(
        results[&1]["output"]["welcome"], "Welcome, grace",
        "{results:?}"
    );
    let error = results[&2]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("`window.never_set` did not hold within 2.0s"),
        "{error}"
    );
}

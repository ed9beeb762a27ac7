//! The DevTools commands one job costs on a reused page, counted on the wire (chromiumoxide
//! traces every command it sends), next to a plain chromiumoxide loop over the same pages. Its
//! own test binary: the counting subscriber is the process's global one.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use serde_json::json;
use support::{run, serve_shop};
use tracing_subscriber::layer::SubscriberExt;

/// Counts the DevTools commands chromiumoxide sends (it traces each one as it goes out).
#[derive(Default, Clone)]
struct CommandCounter(Arc<AtomicU64>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CommandCounter {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(bool);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}").starts_with("Sending ");
                }
            }
        }
        if event.metadata().target() == "chromiumoxide::conn" {
            let mut message = Message(false);
            event.record(&mut message);
            if message.0 {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl CommandCounter {
    fn take(&self) -> u64 {
        self.0.swap(0, Ordering::Relaxed)
    }
}

/// The commands a plain chromiumoxide loop sends for `pages` pages on one reused page: the
/// fastest hand-written way to do the same work.
async fn plain_loop(base: &str, pages: u32) {
    let profile = tempfile::tempdir().unwrap();
    let executable = ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
        .expect("Chromium (cargo xtask test installs it)");
    let config = chromiumoxide::BrowserConfig::builder()
        .chrome_executable(executable)
        .user_data_dir(profile.path())
        .no_sandbox()
        .build()
        .unwrap();
    let (mut browser, mut handler) = chromiumoxide::Browser::launch(config).await.unwrap();
    let driver = tokio::spawn(async move { while handler.next().await.is_some() {} });
    let page = browser.new_page("about:blank").await.unwrap();
    for id in 1..=pages {
        page.goto(format!("{base}/product/{id}")).await.unwrap();
        let _ = page.evaluate("document.cookie").await.unwrap();
    }
    browser.close().await.unwrap();
    let _ = browser.wait().await;
    driver.abort();
}

#[tokio::test]
async fn a_job_on_a_reused_page_costs_at_most_four_devtools_commands_beyond_the_scripts() {
    let counter = CommandCounter::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(counter.clone()))
        .unwrap();
    let base = serve_shop().await;
    let (few, many) = (4, 14);
    let per_job =
        |commands: &[u64]| (commands[1] as f64 - commands[0] as f64) / f64::from(many - few);
    let mut plain = Vec::new();
    let mut reused = Vec::new();
    let mut new_tabs = Vec::new();
    for pages in [few, many] {
        plain_loop(&base, pages).await;
        plain.push(counter.take());
        let visits = vec!["visit"; pages as usize];
        run(&base, json!({}), &visits).await;
        reused.push(counter.take());
        run(&base, json!({ "pages": "new_per_job" }), &visits).await;
        new_tabs.push(counter.take());
    }
    let (plain, reused, new_tabs) = (per_job(&plain), per_job(&reused), per_job(&new_tabs));
    eprintln!(
        "DevTools commands per job: plain loop {plain:.1}, reused page {reused:.1}, tab per job {new_tabs:.1}"
    );
    assert!(
        plain >= 2.0,
        "the counter sees the plain loop's navigation and evaluation: {plain}"
    );
    assert!(
        reused - plain <= 4.0,
        "a reused page costs {reused:.1} commands a job, the plain loop {plain:.1}"
    );
    assert!(
        new_tabs > reused,
        "a tab per job costs more: {new_tabs:.1} against {reused:.1}"
    );
}

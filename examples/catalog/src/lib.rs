//! Armada's browser example: a scraper over a small shop that the example serves itself on
//! 127.0.0.1 ([`site`]). Each agent drives its own Chromium with the identity its
//! `data_agent.csv` row gives it; each job, from `data_job.csv`, visits one page: a product
//! (whose stock is rendered by JavaScript), a listing page, the login form, the page that shows
//! who the browser claims to be, or the slow page.

pub mod site;

use std::time::Duration;

use armada::browser::{BrowserAgent, BrowserJob};
use armada::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

/// The project's own part of the agent config.
#[derive(Debug, Deserialize)]
pub struct Shop {
    /// Where the shop is (`$env_SITE_URL`).
    pub site_url: String,
}

/// One page to visit.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Task {
    /// A product page.
    Product {
        /// The product.
        id: u32,
    },
    /// A listing page.
    Listing {
        /// From 1.
        page: u32,
    },
    /// Log in and read the welcome message.
    Login {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// What the page's JavaScript sees of the browser's identity.
    Whoami,
    /// A page that takes two seconds.
    Slow,
    /// A page that answers 500.
    Broken,
}

/// The scraper.
#[derive(Debug, Default)]
pub struct Catalog;

type Agent = BrowserAgent<Shop>;

impl Script for Catalog {
    type Agent = Agent;
    type Job = BrowserJob<Task, Shop>;
    type Output = Value;

    async fn run(&self, agent: &mut Agent, job: &mut Self::Job) -> Result<Value, ScriptError> {
        let base = agent
            .config()
            .custom
            .site_url
            .trim_end_matches('/')
            .to_owned();
        match &job.payload {
            Task::Product { id } => {
                job.goto(&format!("{base}/product/{id}")).await?;
                // The stock is rendered by the page's script after it loads.
                let stock = wait_for(
                    job,
                    "document.getElementById('stock').textContent",
                    "loading",
                )
                .await?;
                job.report().success(format!("product {id} read"));
                Ok(json!({
                    "name": text(job, "#name").await?,
                    "price": text(job, "#price").await?,
                    "sku": text(job, "#sku").await?,
                    "stock": stock,
                }))
            }
            Task::Listing { page } => {
                job.goto(&format!("{base}/products?page={page}")).await?;
                let names = eval(
                    job,
                    "Array.from(document.querySelectorAll('.product a')).map(a => a.textContent)",
                )
                .await?;
                let next = eval(job, "document.getElementById('next') !== null").await?;
                let blocked = eval(job, "window.blockedImages || 0").await?;
                Ok(json!({ "products": names, "has_next": next, "blocked_images": blocked }))
            }
            Task::Login { user, password } => {
                job.goto(&format!("{base}/login")).await?;
                // Submit after this evaluation returns: the navigation replaces its context.
                let fill = format!(
                    "document.getElementById('user').value = {}; document.getElementById('password').value = {}; setTimeout(() => document.querySelector('form').submit(), 0); true",
                    json!(user),
                    json!(password)
                );
                eval(job, &fill).await?;
                let welcome = wait_for(
                    job,
                    "(document.getElementById('welcome') || {}).textContent || ''",
                    "",
                )
                .await?;
                Ok(json!({ "welcome": welcome }))
            }
            Task::Whoami => {
                job.goto(&format!("{base}/whoami")).await?;
                let who = wait_for(job, "document.getElementById('who').textContent", "").await?;
                let mut who: Value = serde_json::from_str(who.as_str().unwrap_or("{}"))
                    .map_err(ScriptError::fail)?;
                // What the agent knows of itself: which browser and proxy served the page.
                who["browser_launches"] = json!(agent.launches());
                who["open_pages"] = json!(agent.open_pages().await?);
                who["proxy"] = json!(agent.proxy());
                Ok(who)
            }
            Task::Slow => {
                job.goto(&format!("{base}/slow")).await?;
                Ok(json!({ "done": text(job, "#done").await? }))
            }
            Task::Broken => {
                job.goto(&format!("{base}/error")).await?;
                let title = eval(job, "document.title").await?;
                Err(ScriptError::fail(format!(
                    "the shop answered: {}",
                    title.as_str().unwrap_or("")
                )))
            }
        }
    }
}

async fn eval(job: &BrowserJob<Task, Shop>, expression: &str) -> Result<Value, ScriptError> {
    job.evaluate(expression).await
}

async fn text(job: &BrowserJob<Task, Shop>, selector: &str) -> Result<Value, ScriptError> {
    let expression = format!("document.querySelector({}).textContent", json!(selector));
    eval(job, &expression).await
}

/// Evaluates `expression` until it is no longer `pending`, for up to five seconds. Errors
/// count as pending: the page may be between two documents.
async fn wait_for(
    job: &BrowserJob<Task, Shop>,
    expression: &str,
    pending: &str,
) -> Result<Value, ScriptError> {
    let mut last_error = None;
    for _ in 0..100 {
        match eval(job, expression).await {
            Ok(value) if value.as_str() != Some(pending) => return Ok(value),
            Ok(_) => {}
            Err(error) => last_error = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(last_error
        .unwrap_or_else(|| ScriptError::retry(format!("`{expression}` stayed `{pending}`"))))
}

//! Armada's browser example: a scraper over a small shop that the example serves itself on
//! 127.0.0.1 ([`site`]). Each agent drives its own Chromium with the identity its
//! `data_agent.csv` row gives it; each job, from `data_job.csv`, visits one page: a product
//! (whose stock is rendered by JavaScript), a listing page, the login form, the page that shows
//! who the browser claims to be, or the slow page.

pub mod site;

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
                let stock = job
                    .wait_until(
                        "(() => { const stock = document.getElementById('stock').textContent; \
                         return stock !== 'loading' && stock; })()",
                    )
                    .await?;
                job.report().success(format!("product {id} read"));
                Ok(json!({
                    "name": job.text("#name").await?,
                    "price": job.text("#price").await?,
                    "sku": job.text("#sku").await?,
                    "stock": stock,
                }))
            }
            Task::Listing { page } => {
                job.goto(&format!("{base}/products?page={page}")).await?;
                let names = job.evaluate("Array.from(document.querySelectorAll('.product a')).map(a => a.textContent)",
                )
                .await?;
                let next = job
                    .evaluate("document.getElementById('next') !== null")
                    .await?;
                let blocked = job.evaluate("window.blockedImages || 0").await?;
                Ok(json!({ "products": names, "has_next": next, "blocked_images": blocked }))
            }
            Task::Login { user, password } => {
                job.goto(&format!("{base}/login")).await?;
                job.fill("#user", user).await?;
                job.fill("#password", password).await?;
                job.click("#log-in").await?;
                // Waits through the form's navigation to the account page.
                let welcome = job.text("#welcome").await?;
                Ok(json!({ "welcome": welcome }))
            }
            Task::Whoami => {
                job.goto(&format!("{base}/whoami")).await?;
                let who = job
                    .wait_until("document.getElementById('who').textContent")
                    .await?;
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
                Ok(json!({ "done": job.text("#done").await? }))
            }
            Task::Broken => {
                job.goto(&format!("{base}/error")).await?;
                let title = job.evaluate("document.title").await?;
                Err(ScriptError::fail(format!(
                    "the shop answered: {}",
                    title.as_str().unwrap_or("")
                )))
            }
        }
    }
}

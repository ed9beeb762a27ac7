//! The ready-made Chromium agent context (feature `browser`).
//!
//! [`BrowserAgent`] starts one Chromium per agent and reuses it for every job, headless or
//! visible (with its own Xvfb display when the machine has none). By default it keeps one
//! page across jobs, set up with the agent's identity once; between jobs the page stops
//! loading and forgets what the config asks (cookies, storage, cache), and a page that
//! crashed, opened a dialog or a download, or served an attempt that did not succeed is
//! replaced by a fresh one. `browser.pages: new_per_job` gives each job a fresh tab instead. The agent's proxy comes
//! from its config (fixed, rotated through a list, or asked of a provider); its credentials
//! are answered through CDP, never put on a command line. Requests can be blocked and
//! responses rewritten through CDP's Fetch domain. A browser that crashed or disconnected is
//! started again before the next job; it is also recycled after a number of jobs or above a
//! memory limit. When an attempt fails, the page's screenshot, HTML and console messages are
//! saved as evidence.
//!
//! [`BrowserJob`] is the matching job context: the typed payload, the page, and the
//! reporting handle. [`navigate`] opens a URL and classifies failures: a proxy failure becomes
//! [`ScriptError::identity`], so the agent rotates its proxy and retries without counting it.
//!
//! Only this module knows CDP.

mod actions;
mod config;
mod process;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use armada_core::{AgentContext, AgentInfo, BoxError, JobContext, JobInfo, Outcome, ScriptError};
use base64::Engine;
use chromiumoxide::auth::Credentials;
use chromiumoxide::cdp::browser_protocol::browser::{
    EventDownloadWillBegin, PermissionDescriptor, PermissionSetting, SetDownloadBehaviorBehavior,
    SetDownloadBehaviorParams, SetPermissionParams,
};
use chromiumoxide::cdp::browser_protocol::emulation::{
    SetDeviceMetricsOverrideParams, SetGeolocationOverrideParams, SetLocaleOverrideParams,
    SetTimezoneOverrideParams, SetUserAgentOverrideParams, UserAgentBrandVersion,
    UserAgentMetadata,
};
use chromiumoxide::cdp::browser_protocol::fetch::{
    ContinueRequestParams, EnableParams, EventRequestPaused, FailRequestParams,
    FulfillRequestParams, GetResponseBodyParams, RequestPattern, RequestStage,
};
use chromiumoxide::cdp::browser_protocol::network::{
    ClearBrowserCacheParams, ClearBrowserCookiesParams, ErrorReason,
};
use chromiumoxide::cdp::browser_protocol::page::{
    EventFrameNavigated, EventJavascriptDialogOpening, StopLoadingParams,
};
use chromiumoxide::cdp::browser_protocol::storage::ClearDataForOriginParams;
use chromiumoxide::cdp::browser_protocol::target::{EventTargetCrashed, TargetId};
use chromiumoxide::cdp::js_protocol::runtime::{EventConsoleApiCalled, EventExceptionThrown};
use chromiumoxide::handler::{Handler, HandlerConfig};
use chromiumoxide::page::ScreenshotParams;
use chromiumoxide::{Browser, Page};
use futures::StreamExt;
use serde::de::{DeserializeOwned, IgnoredAny};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{
    Brand, BrowserAgentConfig, BrowserData, BrowserSettings, ClientHints, Geolocation, Identity,
    InterceptRules, PageMode, ProxySettings, Rewrite,
};
use process::{ChromiumProcess, Launch, VirtualDisplay};

/// The DevTools client behind [`BrowserJob::page`], for what the helpers do not cover.
pub use chromiumoxide;

/// What can go wrong with the browser itself.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    /// No Chromium was found.
    #[error(
        "no Chromium found: install it (`apt-get install -y chromium` on Debian) or set \
         browser.executable in the agent's config"
    )]
    NotFound,
    /// Chromium did not start.
    #[error("Chromium did not start: {0}")]
    Startup(String),
    /// A file operation failed.
    #[error("cannot {what}: {source}")]
    Io {
        /// What was being done, as a phrase following "cannot" (`create the profile folder`).
        what: String,
        /// The I/O error the operation returned.
        #[source]
        source: std::io::Error,
    },
    /// The DevTools protocol failed.
    #[error("the browser's DevTools connection failed: {0}")]
    Cdp(#[from] chromiumoxide::error::CdpError),
    /// The proxy settings cannot be used.
    #[error("proxy: {0}")]
    Proxy(String),
}

/// A Chromium per agent, with its proxy and identity. `C` is the project's own part of the
/// agent config (ignored by default).
pub struct BrowserAgent<C = IgnoredAny> {
    info: AgentInfo,
    config: BrowserAgentConfig<C>,
    proxies: ProxyRotation,
    session: Option<Session>,
    /// Browsers started so far; names profile folders.
    launches: u32,
    /// Jobs served by the current browser, for `recycle_after_jobs`.
    jobs_on_browser: u32,
    current: Option<OpenPage>,
    /// The current browser's `Session::died`.
    died: CancellationToken,
}

impl<C> std::fmt::Debug for BrowserAgent<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrowserAgent")
            .field("agent", &self.info.index)
            .field("launches", &self.launches)
            .finish()
    }
}

/// A connected browser and the task driving its DevTools connection. Fields drop in order:
/// the browser's processes go before the virtual display they draw on.
struct Session {
    browser: Browser,
    driver: JoinHandle<()>,
    /// Cancelled when the DevTools connection ends (the browser died or disconnected), so
    /// commands in flight fail at once instead of waiting for their time limit.
    died: CancellationToken,
    process: ChromiumProcess,
    /// Held, not read: dropping it stops the Xvfb the browser draws on.
    _display: Option<VirtualDisplay>,
    credentials: Option<Credentials>,
    notes: Arc<BrowserNotes>,
    /// Fills `notes`.
    watcher: JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.watcher.abort();
        self.driver.abort();
    }
}

/// The agent's current page, with the tasks that serve it.
struct OpenPage {
    page: Page,
    console: Arc<Mutex<Vec<String>>>,
    health: Arc<PageHealth>,
    /// The browser's download count when the page was opened: a download since makes it unfit.
    downloads_at_start: u64,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for OpenPage {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl<C: DeserializeOwned + Send + Sync + 'static> AgentContext for BrowserAgent<C> {
    type Config = BrowserAgentConfig<C>;

    async fn start(info: AgentInfo, config: Self::Config) -> Result<Self, BoxError> {
        let proxies = ProxyRotation::new(config.proxy.clone(), info.index);
        let mut agent = Self {
            info,
            config,
            proxies,
            session: None,
            launches: 0,
            jobs_on_browser: 0,
            current: None,
            died: CancellationToken::new(),
        };
        agent.launch().await?;
        Ok(agent)
    }

    async fn stop(mut self) -> Result<(), BoxError> {
        self.current = None;
        if let Some(mut session) = self.session.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), session.browser.close()).await;
        }
        // The process tree is killed and the profile removed as the session drops.
        if let Err(error) = std::fs::remove_dir_all(&self.info.scratch_dir)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(%error, "cannot remove the agent's scratch folder");
        }
        Ok(())
    }

    async fn rotate_identity(&mut self) -> Result<(), BoxError> {
        self.proxies.advance();
        self.current = None;
        self.session = None;
        self.launch().await?;
        Ok(())
    }

    async fn save_evidence(&mut self, folder: &Path, error: &str) -> bool {
        let Some(current) = &self.current else {
            return false;
        };
        let mut saved = false;
        let screenshot = current
            .page
            .screenshot(ScreenshotParams::builder().full_page(true).build())
            .await;
        if let Ok(png) = screenshot {
            saved |= std::fs::write(folder.join("screenshot.png"), png).is_ok();
        }
        if let Ok(html) = current.page.content().await {
            saved |= std::fs::write(folder.join("page.html"), html).is_ok();
        }
        let console = current
            .console
            .lock()
            .map(|lines| lines.join("\n"))
            .unwrap_or_default();
        let url = current.page.url().await.ok().flatten().unwrap_or_default();
        let summary = format!("url: {url}\nerror: {error}\n\nconsole:\n{console}\n");
        saved |= std::fs::write(folder.join("console.txt"), summary).is_ok();
        saved
    }
}

impl<C> BrowserAgent<C> {
    /// Who the agent is: its run, its index, and its scratch and evidence folders.
    pub fn info(&self) -> &AgentInfo {
        &self.info
    }

    /// The agent's config, including the project's own part in `custom`.
    pub fn config(&self) -> &BrowserAgentConfig<C> {
        &self.config
    }

    /// The proxy the current browser uses, without credentials.
    pub fn proxy(&self) -> Option<&str> {
        self.proxies.current_server()
    }

    /// Browsers started so far (1 until a crash, a recycle or a proxy rotation).
    pub fn launches(&self) -> u32 {
        self.launches
    }

    /// Resolves when the current browser's DevTools connection ends: race browser commands
    /// against it to fail at once when the browser dies.
    pub fn browser_died(&self) -> CancellationToken {
        self.died.clone()
    }

    /// Tabs open in the browser (1 while a job runs, unless the job opened popups).
    pub async fn open_pages(&self) -> Result<usize, ScriptError> {
        let session = self
            .session
            .as_ref()
            .ok_or_else(|| ScriptError::retry("no browser"))?;
        let pages = session
            .browser
            .pages()
            .await
            .map_err(|error| ScriptError::retry(BrowserError::Cdp(error)))?;
        Ok(pages.len())
    }

    /// Chromium's process id (it leads its own process group), while running.
    pub fn browser_pid(&self) -> Option<u32> {
        self.session
            .as_ref()
            .and_then(|session| session.process.pid())
    }

    /// Starts a browser, trying again when Chromium hangs or crashes at start (a loaded machine,
    /// a slow disk): such a failure says nothing about the next try, while giving up would
    /// lose the agent for the rest of the run.
    async fn launch(&mut self) -> Result<(), BrowserError> {
        let attempts = self.config.browser.startup_attempts.max(1);
        let mut attempt = 1;
        loop {
            match self.try_launch().await {
                Err(error @ (BrowserError::Startup(_) | BrowserError::Cdp(_)))
                    if attempt < attempts =>
                {
                    tracing::warn!(
                        agent = self.info.index,
                        attempt,
                        %error,
                        "the browser did not start; trying again"
                    );
                    tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn try_launch(&mut self) -> Result<(), BrowserError> {
        let settings = &self.config.browser;
        let executable = match &settings.executable {
            Some(path) => path.clone(),
            None => process::find_executable().ok_or(BrowserError::NotFound)?,
        };
        let proxy = self.proxies.current().await?;
        self.launches += 1;
        let display = virtual_display_if_needed(settings).await?;
        let process = ChromiumProcess::launch(self.launch_options(
            &executable,
            proxy.as_ref(),
            display.as_ref(),
        ))
        .await?;
        let (browser, handler) =
            Browser::connect_with_config(process.websocket.clone(), self.handler_config()).await?;
        let died = CancellationToken::new();
        let notes = Arc::new(BrowserNotes::default());
        let driver = drive_connection(handler, died.clone());
        let watcher = match watch_browser(&browser, Arc::clone(&notes)).await {
            Ok(watcher) => watcher,
            Err(error) => {
                driver.abort();
                return Err(error);
            }
        };
        self.session = Some(Session {
            browser,
            driver,
            died,
            process,
            _display: display,
            credentials: proxy.and_then(|proxy| proxy.credentials),
            notes,
            watcher,
        });
        self.jobs_on_browser = 0;
        tracing::debug!(
            agent = self.info.index,
            launches = self.launches,
            "browser started"
        );
        Ok(())
    }

    /// What the next Chromium starts with; its profile folder is named after `launches`.
    fn launch_options<'a>(
        &'a self,
        executable: &'a Path,
        proxy: Option<&ResolvedProxy>,
        display: Option<&VirtualDisplay>,
    ) -> Launch<'a> {
        let settings = &self.config.browser;
        Launch {
            executable,
            profile: self.info.scratch_dir.join(format!(
                "profile-{}-{}",
                std::process::id(),
                self.launches
            )),
            headless: !settings.screen_visible,
            window_size: settings.window_size,
            proxy_server: proxy.map(|proxy| proxy.server.clone()),
            proxy_bypass: self
                .config
                .proxy
                .as_ref()
                .map_or(&[][..], |proxy| proxy.bypass.as_slice()),
            user_agent: self.config.identity.user_agent.as_deref(),
            accept_language: self.config.identity.accept_language.as_deref(),
            display: display.map(VirtualDisplay::display),
            extra_args: &settings.args,
            startup_timeout: Duration::from_secs_f64(settings.startup_timeout_secs.max(1.0)),
        }
    }

    fn handler_config(&self) -> HandlerConfig {
        HandlerConfig {
            request_timeout: Duration::from_secs_f64(
                self.config.browser.page_load_timeout_secs.max(1.0),
            ),
            request_intercept: !self.config.intercept.is_empty(),
            ..HandlerConfig::default()
        }
    }

    /// Closes every tab but `keep`: the previous job's (dropping a `Page` leaves its tab and
    /// renderer open), popups it opened, and the tab Chromium opened at start.
    async fn close_pages_except(&self, keep: &Page) {
        let Some(session) = &self.session else {
            return;
        };
        for page in session.browser.pages().await.unwrap_or_default() {
            if page.target_id() == keep.target_id() {
                continue;
            }
            if tokio::time::timeout(Duration::from_secs(5), page.close())
                .await
                .is_err()
            {
                tracing::debug!(agent = self.info.index, "closing a page timed out");
            }
        }
    }

    /// Whether the browser must be started again: it died, or it is due for recycling.
    fn needs_launch(&mut self) -> bool {
        let settings = &self.config.browser;
        let Some(session) = self.session.as_mut() else {
            return true;
        };
        if !session.process.is_running() || session.driver.is_finished() {
            tracing::warn!(
                agent = self.info.index,
                "the browser died; starting a new one"
            );
            return true;
        }
        let jobs_due =
            settings.recycle_after_jobs > 0 && self.jobs_on_browser >= settings.recycle_after_jobs;
        let memory_due = settings.recycle_above_mb > 0
            && session.process.resident_mb() > settings.recycle_above_mb;
        jobs_due || memory_due
    }

    /// Starts a new browser when the old one died or is due for recycling.
    async fn ensure_browser(&mut self) -> Result<(), ScriptError> {
        if self.needs_launch() {
            self.current = None;
            self.session = None;
            self.launch().await.map_err(ScriptError::retry)?;
        }
        Ok(())
    }

    /// The page for the next job: with `browser.pages: reuse` (the default) the agent's page,
    /// made ready in place, unless it is unfit for another job; otherwise a fresh one (see
    /// [`new_page`](Self::new_page)). Starts a new browser first when the old one died or is
    /// due for recycling.
    pub async fn page_for_job(&mut self) -> Result<Page, ScriptError> {
        self.ensure_browser().await?;
        if self.config.browser.pages == PageMode::Reuse
            && let Some(page) = self.reuse_page().await
        {
            self.jobs_on_browser += 1;
            return Ok(page);
        }
        self.new_page().await
    }

    /// The current page made ready for another job, or `None` when it must be replaced.
    /// Costs one DevTools round trip, plus one per kind of data to clear.
    async fn reuse_page(&mut self) -> Option<Page> {
        let session = self.session.as_ref()?;
        let current = self.current.as_ref()?;
        if let Some(reason) = current.unfit(session) {
            tracing::debug!(agent = self.info.index, reason, "replacing the page");
            return None;
        }
        // Popups the last job opened; the pages list is the handler's, not a DevTools call.
        if session
            .browser
            .pages()
            .await
            .map_or(true, |pages| pages.len() > 1)
        {
            self.close_pages_except(&current.page).await;
        }
        current.forget_last_job();
        let ready = tokio::time::timeout(
            BETWEEN_JOBS_LIMIT,
            current.prepare_next_job(&self.config.browser.clear_between_jobs),
        )
        .await;
        match ready {
            Ok(Ok(())) => Some(current.page.clone()),
            Ok(Err(error)) => {
                tracing::debug!(agent = self.info.index, %error, "replacing the page");
                None
            }
            Err(_) => {
                tracing::debug!(
                    agent = self.info.index,
                    "the page did not answer; replacing it"
                );
                None
            }
        }
    }

    /// A fresh page with the agent's identity and interception applied, replacing the current
    /// one (which closes once the new one is open). Starts a new browser first when the old one
    /// died or is due for recycling.
    pub async fn new_page(&mut self) -> Result<Page, ScriptError> {
        self.ensure_browser().await?;
        let session = self
            .session
            .as_ref()
            .ok_or_else(|| ScriptError::retry("no browser"))?;
        let page = session
            .browser
            .new_page("about:blank")
            .await
            .map_err(|error| ScriptError::retry(BrowserError::Cdp(error)))?;
        let credentials = session.credentials.clone();
        let downloads = session.notes.downloads();
        self.died = session.died.clone();
        // The previous job's tabs close only once the new one is open: a browser left with no
        // tab at all makes the next one cost more (docs/performance.md).
        self.current = None;
        self.close_pages_except(&page).await;
        self.jobs_on_browser += 1;
        let mut open = prepare_page(
            page,
            &self.config.identity,
            &self.config.intercept,
            credentials,
        )
        .await
        .map_err(ScriptError::retry)?;
        open.downloads_at_start = downloads;
        let page = open.page.clone();
        self.current = Some(open);
        Ok(page)
    }

    /// The current page's health, shared with the job that uses it.
    fn page_health(&self) -> Arc<PageHealth> {
        self.current
            .as_ref()
            .map_or_else(Arc::default, |current| Arc::clone(&current.health))
    }
}

/// How long stopping and clearing a reused page may take before it is replaced instead.
const BETWEEN_JOBS_LIMIT: Duration = Duration::from_secs(5);

/// DevTools `Storage` types a reused page forgets with [`BrowserData::Storage`].
const STORAGE_TYPES: &str =
    "local_storage,indexeddb,websql,service_workers,cache_storage,file_systems";

impl OpenPage {
    /// Why the page cannot serve another job, if it cannot.
    fn unfit(&self, session: &Session) -> Option<String> {
        if session.notes.crashed(self.page.target_id()) {
            return Some("its renderer crashed".to_owned());
        }
        if session.notes.downloads() != self.downloads_at_start {
            return Some("it started a download".to_owned());
        }
        self.health.unfit()
    }

    /// Empties what the page collected for the last job's evidence.
    fn forget_last_job(&self) {
        if let Ok(mut lines) = self.console.lock() {
            lines.clear();
        }
    }

    /// Stops what the last job left loading and clears the data the project asks to forget.
    async fn prepare_next_job(&self, clear: &[BrowserData]) -> Result<(), BrowserError> {
        self.page.execute(StopLoadingParams::default()).await?;
        for data in clear {
            match data {
                BrowserData::Cookies => {
                    self.page
                        .execute(ClearBrowserCookiesParams::default())
                        .await?;
                }
                BrowserData::Cache => {
                    self.page
                        .execute(ClearBrowserCacheParams::default())
                        .await?;
                }
                BrowserData::Storage => {
                    for origin in self.health.take_origins() {
                        self.page
                            .execute(ClearDataForOriginParams::new(origin, STORAGE_TYPES))
                            .await?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// What the agent learns about a page while jobs use it, from its events and its jobs.
#[derive(Debug, Default)]
struct PageHealth {
    /// Why it must be replaced before the next job.
    unfit: Mutex<Option<String>>,
    /// Origins its frames visited since the last job, for [`BrowserData::Storage`].
    origins: Mutex<BTreeSet<String>>,
}

impl PageHealth {
    /// Marks the page for replacement; the first reason stays.
    fn mark_unfit(&self, reason: impl Into<String>) {
        if let Ok(mut unfit) = self.unfit.lock() {
            unfit.get_or_insert_with(|| reason.into());
        }
    }

    fn unfit(&self) -> Option<String> {
        self.unfit.lock().ok().and_then(|unfit| unfit.clone())
    }

    fn visited(&self, origin: &str) {
        // Opaque origins (about:blank, data:) hold no storage.
        if origin.is_empty() || origin == "null" || origin == "://" {
            return;
        }
        if let Ok(mut origins) = self.origins.lock()
            && origins.len() < 1_000
        {
            origins.insert(origin.to_owned());
        }
    }

    fn take_origins(&self) -> BTreeSet<String> {
        self.origins
            .lock()
            .map(|mut origins| std::mem::take(&mut *origins))
            .unwrap_or_default()
    }
}

/// What the browser reports about its pages outside their own sessions: renderer crashes and
/// downloads.
#[derive(Debug, Default)]
struct BrowserNotes {
    crashed: Mutex<Vec<TargetId>>,
    downloads: std::sync::atomic::AtomicU64,
}

impl BrowserNotes {
    fn crashed(&self, target: &TargetId) -> bool {
        self.crashed
            .lock()
            .is_ok_and(|crashed| crashed.contains(target))
    }

    fn downloads(&self) -> u64 {
        self.downloads.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A visible browser on a machine without a display gets its own Xvfb.
async fn virtual_display_if_needed(
    settings: &BrowserSettings,
) -> Result<Option<VirtualDisplay>, BrowserError> {
    if settings.screen_visible && std::env::var_os("DISPLAY").is_none() {
        Ok(Some(VirtualDisplay::start(settings.window_size).await?))
    } else {
        Ok(None)
    }
}

/// Drives the DevTools connection and cancels `died` when it ends.
fn drive_connection(mut handler: Handler, died: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        // Events that fail to parse (CDP drift, see DEPENDENCIES.md) are not fatal; a
        // broken WebSocket or socket is: the handler would keep yielding it.
        while let Some(event) = handler.next().await {
            match event {
                Ok(()) => {}
                Err(
                    chromiumoxide::error::CdpError::Ws(_) | chromiumoxide::error::CdpError::Io(_),
                ) => break,
                Err(error) => tracing::trace!(%error, "DevTools event"),
            }
        }
        died.cancel();
    })
}

/// Listens for renderer crashes and downloads, which the browser reports on its own session.
/// Download events are asked for with the download behaviour left at Chromium's default.
async fn watch_browser(
    browser: &Browser,
    notes: Arc<BrowserNotes>,
) -> Result<JoinHandle<()>, BrowserError> {
    let mut crashes = browser.event_listener::<EventTargetCrashed>().await?;
    let mut downloads = browser.event_listener::<EventDownloadWillBegin>().await?;
    let mut behaviour = SetDownloadBehaviorParams::new(SetDownloadBehaviorBehavior::Default);
    behaviour.events_enabled = Some(true);
    browser.execute(behaviour).await?;
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(crash) = crashes.next() => {
                    if let Ok(mut crashed) = notes.crashed.lock() {
                        crashed.push(crash.target_id.clone());
                    }
                }
                Some(_) = downloads.next() => {
                    notes.downloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                else => break,
            }
        }
    }))
}

/// Applies the identity and interception to a blank page, before anything navigates.
async fn prepare_page(
    page: Page,
    identity: &Identity,
    intercept: &InterceptRules,
    credentials: Option<Credentials>,
) -> Result<OpenPage, BrowserError> {
    let has_credentials = credentials.is_some();
    if let Some(credentials) = credentials {
        page.authenticate(credentials).await?;
    }
    apply_identity(&page, identity).await?;
    let console = Arc::new(Mutex::new(Vec::new()));
    let health = Arc::new(PageHealth::default());
    let mut tasks = vec![watch_page(&page, Arc::clone(&console), Arc::clone(&health)).await?];
    if !intercept.is_empty() {
        tasks.push(intercept_task(&page, intercept.clone(), has_credentials).await?);
    }
    Ok(OpenPage {
        page,
        console,
        health,
        downloads_at_start: 0,
        tasks,
    })
}

/// Overrides only what the identity sets; the rest stays Chromium's own.
async fn apply_identity(page: &Page, identity: &Identity) -> Result<(), BrowserError> {
    if identity.user_agent.is_some() || identity.accept_language.is_some() {
        override_user_agent(page, identity).await?;
    }
    if let Some(locale) = &identity.locale {
        let params = SetLocaleOverrideParams {
            locale: Some(locale.clone()),
        };
        page.execute(params).await?;
    }
    if let Some(timezone) = &identity.timezone {
        page.execute(SetTimezoneOverrideParams::new(timezone.clone()))
            .await?;
    }
    if identity.viewport.is_some() || identity.device_scale.is_some() {
        let [width, height] = identity.viewport.unwrap_or([0, 0]);
        let params = SetDeviceMetricsOverrideParams::new(
            i64::from(width),
            i64::from(height),
            identity.device_scale.unwrap_or(0.0),
            false,
        );
        page.execute(params).await?;
    }
    if let Some(position) = identity.geolocation {
        override_geolocation(page, position).await?;
    }
    Ok(())
}

/// The languages travel with the user agent in one command: without an identity user agent,
/// the browser's own is sent back with them.
async fn override_user_agent(page: &Page, identity: &Identity) -> Result<(), BrowserError> {
    let user_agent = match &identity.user_agent {
        Some(user_agent) => user_agent.clone(),
        None => page.user_agent().await?,
    };
    let mut params = SetUserAgentOverrideParams::new(user_agent);
    params.accept_language = identity.accept_language.clone();
    if let Some(hints) = &identity.client_hints {
        params.platform = Some(hints.platform.clone());
        params.user_agent_metadata = Some(client_hints_metadata(hints)?);
    }
    page.execute(params).await?;
    Ok(())
}

fn client_hints_metadata(hints: &ClientHints) -> Result<UserAgentMetadata, BrowserError> {
    let brands = hints
        .brands
        .iter()
        .map(|brand| UserAgentBrandVersion::new(brand.brand.clone(), brand.version.clone()))
        .collect::<Vec<_>>();
    UserAgentMetadata::builder()
        .platform(hints.platform.clone())
        .platform_version("")
        .architecture("")
        .model("")
        .mobile(hints.mobile)
        .brands(brands)
        .build()
        .map_err(BrowserError::Startup)
}

/// Grants the permission as well: without it, pages asking for the position are refused or
/// prompted instead of given the override.
async fn override_geolocation(page: &Page, position: Geolocation) -> Result<(), BrowserError> {
    let grant = SetPermissionParams::new(
        PermissionDescriptor::new("geolocation"),
        PermissionSetting::Granted,
    );
    page.execute(grant).await?;
    let params = SetGeolocationOverrideParams {
        latitude: Some(position.latitude),
        longitude: Some(position.longitude),
        accuracy: Some(position.accuracy),
        ..SetGeolocationOverrideParams::default()
    };
    page.execute(params).await?;
    Ok(())
}

/// Collects the page's console messages and uncaught exceptions for failure evidence, the
/// origins its frames visit, and the dialogs that make it unfit for another job.
async fn watch_page(
    page: &Page,
    console: Arc<Mutex<Vec<String>>>,
    health: Arc<PageHealth>,
) -> Result<JoinHandle<()>, BrowserError> {
    let mut messages = page.event_listener::<EventConsoleApiCalled>().await?;
    let mut exceptions = page.event_listener::<EventExceptionThrown>().await?;
    let mut dialogs = page
        .event_listener::<EventJavascriptDialogOpening>()
        .await?;
    let mut navigations = page.event_listener::<EventFrameNavigated>().await?;
    Ok(tokio::spawn(async move {
        loop {
            let line = tokio::select! {
                Some(navigation) = navigations.next() => {
                    health.visited(&navigation.frame.security_origin);
                    continue;
                }
                Some(dialog) = dialogs.next() => {
                    health.mark_unfit(format!("it opened a {:?} dialog", dialog.r#type));
                    format!("dialog: {}", dialog.message)
                }
                Some(message) = messages.next() => {
                    let text: Vec<String> = message
                        .args
                        .iter()
                        .map(|arg| {
                            arg.value
                                .as_ref()
                                .map(ToString::to_string)
                                .or_else(|| arg.description.clone())
                                .unwrap_or_default()
                        })
                        .collect();
                    format!("{:?}: {}", message.r#type, text.join(" "))
                }
                Some(exception) = exceptions.next() => {
                    format!("uncaught: {}", exception.exception_details.text)
                }
                else => break,
            };
            if let Ok(mut lines) = console.lock()
                && lines.len() < 1_000
            {
                lines.push(line);
            }
        }
    }))
}

/// Serves paused requests: block, rewrite, or let through.
async fn intercept_task(
    page: &Page,
    rules: InterceptRules,
    handle_auth: bool,
) -> Result<JoinHandle<()>, BrowserError> {
    let mut paused = page.event_listener::<EventRequestPaused>().await?;
    let mut patterns = vec![
        RequestPattern::builder()
            .url_pattern("*")
            .request_stage(RequestStage::Request)
            .build(),
    ];
    patterns.extend(rules.rewrite.iter().map(|rewrite| {
        RequestPattern::builder()
            .url_pattern(rewrite.url.clone())
            .request_stage(RequestStage::Response)
            .build()
    }));
    let mut enable = EnableParams::builder().patterns(patterns).build();
    // Fetch.enable replaces earlier patterns: keep chromiumoxide's proxy authentication on.
    enable.handle_auth_requests = Some(handle_auth);
    page.execute(enable).await?;
    let page = page.clone();
    Ok(tokio::spawn(async move {
        while let Some(event) = paused.next().await {
            if let Err(error) = serve_paused(&page, &rules, &event).await {
                tracing::debug!(%error, url = %event.request.url, "interception failed");
            }
        }
    }))
}

async fn serve_paused(
    page: &Page,
    rules: &InterceptRules,
    event: &EventRequestPaused,
) -> Result<(), BrowserError> {
    let url = &event.request.url;
    let id = event.request_id.clone();
    if event.response_status_code.is_some() {
        let rewrites: Vec<&Rewrite> = rules
            .rewrite
            .iter()
            .filter(|rewrite| config::wildcard_match(&rewrite.url, url))
            .collect();
        if !rewrites.is_empty() {
            let body = page.execute(GetResponseBodyParams::new(id.clone())).await?;
            let mut text = if body.base64_encoded {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(&body.body)
                    .unwrap_or_default();
                String::from_utf8_lossy(&bytes).into_owned()
            } else {
                body.body.clone()
            };
            for rewrite in rewrites {
                text = text.replace(&rewrite.find, &rewrite.replace);
            }
            let mut fulfill =
                FulfillRequestParams::new(id, event.response_status_code.unwrap_or(200));
            fulfill.response_headers = event.response_headers.clone();
            fulfill.body = Some(
                base64::engine::general_purpose::STANDARD
                    .encode(text)
                    .into(),
            );
            page.execute(fulfill).await?;
            return Ok(());
        }
        page.execute(ContinueRequestParams::new(id)).await?;
        return Ok(());
    }
    let resource = format!("{:?}", event.resource_type);
    let blocked = rules
        .block_resource_types
        .iter()
        .any(|kind| kind.eq_ignore_ascii_case(&resource))
        || rules
            .block_urls
            .iter()
            .any(|pattern| config::wildcard_match(pattern, url));
    if blocked {
        page.execute(FailRequestParams::new(id, ErrorReason::BlockedByClient))
            .await?;
    } else {
        page.execute(ContinueRequestParams::new(id)).await?;
    }
    Ok(())
}

/// Opens `url` in `page` within the page-load limit, and classifies failures: proxy failures
/// become [`ScriptError::identity`] (rotate and retry without counting), others are retryable.
pub async fn navigate(page: &Page, url: &str) -> Result<(), ScriptError> {
    match page.goto(url).await {
        Ok(_) => Ok(()),
        Err(error) => {
            let text = error.to_string();
            let proxy_failure = ["ERR_PROXY", "ERR_TUNNEL_CONNECTION_FAILED", "ERR_SOCKS"]
                .iter()
                .any(|marker| text.contains(marker));
            let message = format!("cannot open {url}: {text}");
            Err(if proxy_failure {
                ScriptError::identity(message)
            } else {
                ScriptError::retry(message)
            })
        }
    }
}

/// Evaluates a JavaScript expression in `page` and returns its value (`null` for
/// `undefined`). A JavaScript exception becomes a retryable error carrying its message.
pub async fn evaluate(page: &Page, expression: &str) -> Result<serde_json::Value, ScriptError> {
    match page.evaluate(expression).await {
        Ok(result) => Ok(result.value().cloned().unwrap_or(serde_json::Value::Null)),
        Err(error) => Err(script_error(error)),
    }
}

/// A failed DevTools command as a retryable script error; a JavaScript exception carries its
/// message.
fn script_error(error: chromiumoxide::error::CdpError) -> ScriptError {
    match error {
        chromiumoxide::error::CdpError::JavascriptException(details) => {
            let message = details
                .exception
                .as_ref()
                .and_then(|exception| exception.description.clone())
                .unwrap_or_else(|| details.text.clone());
            ScriptError::retry(format!("JavaScript error: {message}"))
        }
        error => ScriptError::retry(BrowserError::Cdp(error)),
    }
}

/// A proxy ready for a browser: the `--proxy-server` value without credentials, and the
/// credentials for CDP.
#[derive(Clone)]
struct ResolvedProxy {
    server: String,
    credentials: Option<Credentials>,
}

/// The agent's proxy source and position.
struct ProxyRotation {
    settings: Option<ProxySettings>,
    position: usize,
    current: Option<String>,
}

impl ProxyRotation {
    fn new(settings: Option<ProxySettings>, agent: u32) -> Self {
        Self {
            settings,
            position: agent as usize,
            current: None,
        }
    }

    fn advance(&mut self) {
        self.position += 1;
    }

    fn current_server(&self) -> Option<&str> {
        self.current.as_deref()
    }

    async fn current(&mut self) -> Result<Option<ResolvedProxy>, BrowserError> {
        let Some(settings) = &self.settings else {
            return Ok(None);
        };
        let url = if let Some(server) = &settings.server {
            server.clone()
        } else if !settings.list.is_empty() {
            settings.list[self.position % settings.list.len()].clone()
        } else if let Some(provider) = &settings.provider {
            ask_provider(provider).await?
        } else {
            return Ok(None);
        };
        let mut resolved = split_credentials(&url)?;
        if resolved.credentials.is_none()
            && let Some(username) = &settings.username
        {
            resolved.credentials = Some(Credentials {
                username: username.clone(),
                password: settings
                    .password
                    .as_ref()
                    .map(|password| password.expose().to_owned())
                    .unwrap_or_default(),
            });
        }
        self.current = Some(resolved.server.clone());
        Ok(Some(resolved))
    }
}

/// Asks a proxy provider for a proxy: plain text or `{"proxy": "…"}`.
async fn ask_provider(provider: &str) -> Result<String, BrowserError> {
    let failed = |message: String| BrowserError::Proxy(format!("provider {provider}: {message}"));
    let response = reqwest::get(provider)
        .await
        .map_err(|error| failed(error.to_string()))?;
    if !response.status().is_success() {
        return Err(failed(format!("answered {}", response.status())));
    }
    let body = response
        .text()
        .await
        .map_err(|error| failed(error.to_string()))?;
    let body = body.trim();
    let proxy = match serde_json::from_str::<serde_json::Value>(body) {
        Ok(value) => value["proxy"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| failed(format!("no \"proxy\" in {body}")))?,
        Err(_) => body.to_owned(),
    };
    Ok(proxy)
}

/// Splits `scheme://user:pass@host:port` into the server and its credentials.
fn split_credentials(url: &str) -> Result<ResolvedProxy, BrowserError> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(BrowserError::Proxy(format!(
            "`{}` is not a proxy URL: use http://, https:// or socks5://host:port",
            armada_core::backend::redact_url(url)
        )));
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let (username, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            // A password in a proxy URL is as secret as one given as a `Secret`.
            let _ = armada_core::Secret::new(password);
            Ok(ResolvedProxy {
                server: format!("{scheme}://{host}"),
                credentials: Some(Credentials {
                    username: username.to_owned(),
                    password: password.to_owned(),
                }),
            })
        }
        None => Ok(ResolvedProxy {
            server: url.to_owned(),
            credentials: None,
        }),
    }
}

/// A ready-made job context for browser scripts: the typed payload, a fresh page with the
/// agent's identity, and the reporting handle.
pub struct BrowserJob<P, C = IgnoredAny> {
    /// Which attempt of which job.
    pub info: JobInfo,
    /// The job's merged message, deserialized into the script's payload type `P`.
    pub payload: P,
    /// This job's page: the agent's page, or a fresh tab with `browser.pages: new_per_job`.
    pub page: Page,
    browser_died: CancellationToken,
    /// How long a wait may last (`browser.page_load_timeout_secs`).
    wait_limit: Duration,
    page_lease: PageLease,
    agent: std::marker::PhantomData<fn() -> C>,
}

/// A job's hold on the agent's page: unless the attempt ends in success, the page is marked
/// unfit, so the next job (the retry included) starts on a fresh one.
struct PageLease {
    health: Arc<PageHealth>,
    succeeded: bool,
}

impl Drop for PageLease {
    fn drop(&mut self) {
        if !self.succeeded {
            self.health
                .mark_unfit("an attempt on it did not succeed (failed, timed out or panicked)");
        }
    }
}

impl<P, C> BrowserJob<P, C> {
    /// The reporting handle of this attempt.
    pub fn report(&self) -> &armada_core::Reporter {
        &self.info.report
    }

    /// Opens `url` in this job's page; see [`navigate`]. Fails at once if the browser dies.
    pub async fn goto(&self, url: &str) -> Result<(), ScriptError> {
        self.unless_browser_dies(navigate(&self.page, url)).await
    }

    /// Evaluates JavaScript in this job's page; see [`evaluate`]. Fails at once if the browser
    /// dies.
    pub async fn evaluate(&self, expression: &str) -> Result<serde_json::Value, ScriptError> {
        self.unless_browser_dies(evaluate(&self.page, expression))
            .await
    }

    /// Runs a browser command, failing it as retryable as soon as the browser dies.
    pub async fn unless_browser_dies<T>(
        &self,
        command: impl std::future::Future<Output = Result<T, ScriptError>>,
    ) -> Result<T, ScriptError> {
        tokio::select! {
            result = command => result,
            () = self.browser_died.cancelled() => {
                Err(ScriptError::retry("the browser died during the job; it is started again"))
            }
        }
    }
}

impl<P: DeserializeOwned + Send, C: DeserializeOwned + Send + Sync + 'static>
    JobContext<BrowserAgent<C>> for BrowserJob<P, C>
{
    type Payload = P;

    async fn start(
        agent: &mut BrowserAgent<C>,
        info: JobInfo,
        payload: P,
    ) -> Result<Self, ScriptError> {
        let page = agent.page_for_job().await?;
        Ok(Self {
            info,
            payload,
            page,
            browser_died: agent.browser_died(),
            wait_limit: Duration::from_secs_f64(
                agent.config.browser.page_load_timeout_secs.max(1.0),
            ),
            page_lease: PageLease {
                health: agent.page_health(),
                succeeded: false,
            },
            agent: std::marker::PhantomData,
        })
    }

    async fn finish(mut self, outcome: &Outcome) -> Result<(), BoxError> {
        self.page_lease.succeeded = matches!(outcome, Outcome::Succeeded);
        Ok(())
    }
}

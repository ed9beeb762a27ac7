//! The ready-made Chromium agent context (feature `browser`).
//!
//! [`BrowserAgent`] starts one Chromium per agent and reuses it for every job, headless or
//! visible (with its own Xvfb display when the machine has none). Each job gets a
//! fresh page with the agent's identity applied before it navigates. The agent's proxy comes
//! from its config (fixed, rotated through a list, or asked of a provider); its credentials
//! are answered through CDP, never put on a command line. Requests can be blocked and
//! responses rewritten through CDP's Fetch domain. A browser that crashed or disconnected is
//! started again before the next job; it is also recycled after a number of jobs or above a
//! memory limit. When an attempt fails, the page's screenshot, HTML and console messages are
//! saved as evidence.
//!
//! [`BrowserJob`] is the matching job context: the typed payload, the page, and the
//! reporting handle. [`navigate`] opens a URL and classifies failures: a proxy failure becomes
//! [`ScriptError::proxy`], so the agent rotates its proxy and retries without counting it.
//!
//! Only this module knows CDP.

mod config;
mod process;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use armada_core::{AgentContext, AgentInfo, BoxError, JobContext, JobInfo, ScriptError};
use base64::Engine;
use chromiumoxide::auth::Credentials;
use chromiumoxide::cdp::browser_protocol::browser::{
    PermissionDescriptor, PermissionSetting, SetPermissionParams,
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
use chromiumoxide::cdp::browser_protocol::network::ErrorReason;
use chromiumoxide::cdp::js_protocol::runtime::{EventConsoleApiCalled, EventExceptionThrown};
use chromiumoxide::handler::HandlerConfig;
use chromiumoxide::page::ScreenshotParams;
use chromiumoxide::{Browser, Page};
use futures::StreamExt;
use serde::de::{DeserializeOwned, IgnoredAny};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{
    Brand, BrowserAgentConfig, BrowserSettings, ClientHints, Geolocation, Identity, InterceptRules,
    ProxySettings, Rewrite,
};
use process::{ChromiumProcess, Launch, VirtualDisplay};

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
        /// What was being done.
        what: String,
        /// Why.
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
    /// Pages opened by the current browser.
    pages_on_browser: u32,
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
}

impl Drop for Session {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// The page of the current job, with the tasks that serve it.
struct OpenPage {
    page: Page,
    console: Arc<Mutex<Vec<String>>>,
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
            pages_on_browser: 0,
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
    /// Who the agent is.
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

    /// Tabs open in the browser (1 while a job runs: each job's page replaces the last).
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
        let profile =
            self.info
                .scratch_dir
                .join(format!("profile-{}-{}", std::process::id(), self.launches));
        let display = if settings.screen_visible && std::env::var_os("DISPLAY").is_none() {
            Some(VirtualDisplay::start(settings.window_size).await?)
        } else {
            None
        };
        let process = ChromiumProcess::launch(Launch {
            executable: &executable,
            profile,
            headless: !settings.screen_visible,
            window_size: settings.window_size,
            proxy_server: proxy.as_ref().map(|proxy| proxy.server.clone()),
            proxy_bypass: self
                .config
                .proxy
                .as_ref()
                .map_or(&[][..], |proxy| proxy.bypass.as_slice()),
            user_agent: self.config.identity.user_agent.as_deref(),
            accept_language: self.config.identity.accept_language.as_deref(),
            display: display.as_ref().map(VirtualDisplay::display),
            extra_args: &settings.args,
            startup_timeout: Duration::from_secs_f64(settings.startup_timeout_secs.max(1.0)),
        })
        .await?;
        let handler_config = HandlerConfig {
            request_timeout: Duration::from_secs_f64(settings.page_load_timeout_secs.max(1.0)),
            request_intercept: !self.config.intercept.is_empty(),
            ..HandlerConfig::default()
        };
        let (browser, mut handler) =
            Browser::connect_with_config(process.websocket.clone(), handler_config).await?;
        let died = CancellationToken::new();
        let connection_ended = died.clone();
        let driver = tokio::spawn(async move {
            // Events that fail to parse (CDP drift, see DEPENDENCIES.md) are not fatal; a
            // broken WebSocket or socket is: the handler would keep yielding it.
            while let Some(event) = handler.next().await {
                match event {
                    Ok(()) => {}
                    Err(
                        chromiumoxide::error::CdpError::Ws(_)
                        | chromiumoxide::error::CdpError::Io(_),
                    ) => break,
                    Err(error) => tracing::trace!(%error, "DevTools event"),
                }
            }
            connection_ended.cancel();
        });
        self.session = Some(Session {
            browser,
            driver,
            died,
            process,
            _display: display,
            credentials: proxy.and_then(|proxy| proxy.credentials),
        });
        self.pages_on_browser = 0;
        tracing::debug!(
            agent = self.info.index,
            launches = self.launches,
            "browser started"
        );
        Ok(())
    }

    /// Closes every tab but `keep`: the previous job's (dropping a `Page` leaves its tab and
    /// renderer open), popups it opened, and the tab Chromium opened at start.
    async fn close_pages_except(&mut self, keep: &Page) {
        self.current = None;
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
            settings.recycle_after_jobs > 0 && self.pages_on_browser >= settings.recycle_after_jobs;
        let memory_due = settings.recycle_above_mb > 0
            && session.process.resident_mb() > settings.recycle_above_mb;
        jobs_due || memory_due
    }

    /// A fresh page with the agent's identity and interception applied, replacing the previous
    /// job's page. Starts a new browser first when the old one died or is due for recycling.
    pub async fn new_page(&mut self) -> Result<Page, ScriptError> {
        if self.needs_launch() {
            self.current = None;
            self.session = None;
            self.launch().await.map_err(ScriptError::retry)?;
        }
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
        self.died = session.died.clone();
        // The previous job's tabs close only once the new one is open: a browser left with no
        // tab at all makes the next one cost more (docs/performance.md).
        self.close_pages_except(&page).await;
        self.pages_on_browser += 1;
        let open = prepare_page(
            page,
            &self.config.identity,
            &self.config.intercept,
            credentials,
        )
        .await
        .map_err(ScriptError::retry)?;
        let page = open.page.clone();
        self.current = Some(open);
        Ok(page)
    }
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
    if identity.user_agent.is_some() || identity.accept_language.is_some() {
        let user_agent = match &identity.user_agent {
            Some(user_agent) => user_agent.clone(),
            None => page.user_agent().await?,
        };
        let mut params = SetUserAgentOverrideParams::new(user_agent);
        params.accept_language = identity.accept_language.clone();
        if let Some(hints) = &identity.client_hints {
            let brands = hints
                .brands
                .iter()
                .map(|brand| UserAgentBrandVersion::new(brand.brand.clone(), brand.version.clone()))
                .collect::<Vec<_>>();
            params.platform = Some(hints.platform.clone());
            let metadata = UserAgentMetadata::builder()
                .platform(hints.platform.clone())
                .platform_version("")
                .architecture("")
                .model("")
                .mobile(hints.mobile)
                .brands(brands)
                .build()
                .map_err(BrowserError::Startup)?;
            params.user_agent_metadata = Some(metadata);
        }
        page.execute(params).await?;
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
    }
    let console = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = vec![console_task(&page, Arc::clone(&console)).await?];
    if !intercept.is_empty() {
        tasks.push(intercept_task(&page, intercept.clone(), has_credentials).await?);
    }
    Ok(OpenPage {
        page,
        console,
        tasks,
    })
}

/// Collects the page's console messages and uncaught exceptions for failure evidence.
async fn console_task(
    page: &Page,
    console: Arc<Mutex<Vec<String>>>,
) -> Result<JoinHandle<()>, BrowserError> {
    let mut messages = page.event_listener::<EventConsoleApiCalled>().await?;
    let mut exceptions = page.event_listener::<EventExceptionThrown>().await?;
    Ok(tokio::spawn(async move {
        loop {
            let line = tokio::select! {
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
/// become [`ScriptError::proxy`] (rotate and retry without counting), others are retryable.
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
                ScriptError::proxy(message)
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
        Err(chromiumoxide::error::CdpError::JavascriptException(details)) => {
            let message = details
                .exception
                .as_ref()
                .and_then(|exception| exception.description.clone())
                .unwrap_or_else(|| details.text.clone());
            Err(ScriptError::retry(format!("JavaScript error: {message}")))
        }
        Err(error) => Err(ScriptError::retry(BrowserError::Cdp(error))),
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
                password: settings.password.clone().unwrap_or_default(),
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
    /// The typed payload.
    pub payload: P,
    /// This job's page.
    pub page: Page,
    browser_died: CancellationToken,
    agent: std::marker::PhantomData<fn() -> C>,
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

impl<P: DeserializeOwned + Send, C: DeserializeOwned + Send + Sync + 'static> JobContext
    for BrowserJob<P, C>
{
    type Agent = BrowserAgent<C>;
    type Payload = P;

    async fn start(
        agent: &mut BrowserAgent<C>,
        info: JobInfo,
        payload: P,
    ) -> Result<Self, ScriptError> {
        let page = agent.new_page().await?;
        Ok(Self {
            info,
            payload,
            page,
            browser_died: agent.browser_died(),
            agent: std::marker::PhantomData,
        })
    }
}

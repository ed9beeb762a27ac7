//! The `browser`, `proxy`, `identity` and `intercept` sections of an agent's config
//! (`default_agent_message`, overridable per agent in `data_agent.csv`).

use std::path::PathBuf;

use serde::Deserialize;
use serde::de::IgnoredAny;

/// An agent's config for [`BrowserAgent`](super::BrowserAgent): the browser sections, and the
/// project's own fields (`custom`, flattened, ignored by default).
#[derive(Debug, Clone, Deserialize)]
pub struct BrowserAgentConfig<C = IgnoredAny> {
    /// How Chromium runs: the `browser` section, defaults when it is absent.
    #[serde(default)]
    pub browser: BrowserSettings,
    /// The agent's proxy.
    #[serde(default)]
    pub proxy: Option<ProxySettings>,
    /// Who the agent appears to be.
    #[serde(default)]
    pub identity: Identity,
    /// Requests to block and responses to rewrite.
    #[serde(default)]
    pub intercept: InterceptRules,
    /// The project's own fields.
    #[serde(flatten)]
    pub custom: C,
}

/// The `browser` section: which Chromium to start and how (window, pages, timeouts, recycling).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrowserSettings {
    /// Show the window (needs a display).
    pub screen_visible: bool,
    /// Chromium's executable; found automatically when absent.
    pub executable: Option<PathBuf>,
    /// Window size in pixels, `[width, height]`.
    pub window_size: [u32; 2],
    /// Extra Chromium arguments, without the leading `--` (`"lang=fr"`).
    pub args: Vec<String>,
    /// Time limit of one navigation, in seconds.
    pub page_load_timeout_secs: f64,
    /// Start a new browser after this many jobs (0: never).
    pub recycle_after_jobs: u32,
    /// Start a new browser when its processes use more than this many megabytes (0: never).
    pub recycle_above_mb: u64,
    /// How long one Chromium start may take, in seconds, until it prints its DevTools address.
    pub startup_timeout_secs: f64,
    /// Chromium starts tried before the agent gives up (at least 1): a start that hangs or
    /// crashes on a loaded machine is tried again with a fresh profile.
    pub startup_attempts: u32,
    /// Whether jobs share the agent's page or each gets a new tab.
    pub pages: PageMode,
    /// What a reused page forgets between jobs (`["cookies", "storage", "cache"]`); nothing by
    /// default, as with a tab per job, whose tabs share the browser's cookies and storage too.
    pub clear_between_jobs: Vec<BrowserData>,
}

/// Whether jobs share the agent's page (`browser.pages`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PageMode {
    /// One page per agent, kept across jobs: the identity and interception are set up once, and
    /// between jobs the page only stops loading and forgets what `clear_between_jobs` names. A
    /// page that crashed, showed a dialog, started a download, or served an attempt that did
    /// not succeed (failed, timed out, panicked) is closed and a fresh one set up for the next
    /// job. A new tab costs the browser a renderer's start and set-up: reusing the page is
    /// about twice as fast on 2 cores (BENCHMARKS.md).
    #[default]
    Reuse,
    /// A fresh tab for every job, set up before it navigates; the last job's tab closes.
    NewPerJob,
}

/// Browser data a reused page can forget between jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BrowserData {
    /// Every cookie of the browser.
    Cookies,
    /// Local storage, IndexedDB, cache storage and service workers of every origin the page
    /// visited during the job.
    Storage,
    /// The browser's whole HTTP cache, not only that of the origins the job visited.
    Cache,
}

impl Default for BrowserSettings {
    fn default() -> Self {
        Self {
            screen_visible: false,
            executable: None,
            window_size: [1280, 800],
            args: Vec::new(),
            page_load_timeout_secs: 30.0,
            recycle_after_jobs: 0,
            recycle_above_mb: 0,
            startup_timeout_secs: 60.0,
            startup_attempts: 3,
            pages: PageMode::Reuse,
            clear_between_jobs: Vec::new(),
        }
    }
}

/// Where the agent's proxy comes from. Credentials may sit in the URL (`http://user:pass@host`)
/// or in `username` / `password`; they reach Chromium through CDP, never its command line.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySettings {
    /// A fixed proxy (`http://`, `https://` or `socks5://`).
    pub server: Option<String>,
    /// Proxies to rotate through: the agent starts at its own index.
    pub list: Vec<String>,
    /// An HTTP endpoint answering a proxy URL, as plain text or JSON `{"proxy": "…"}` (the
    /// original system's `GET /fetch_proxy`).
    pub provider: Option<String>,
    /// User name, when not in the URL.
    pub username: Option<String>,
    /// Password, when not in the URL: a secret, shown as `***` everywhere but to Chromium.
    pub password: Option<armada_core::Secret>,
    /// Hosts that bypass the proxy (`localhost`, `*.internal`).
    pub bypass: Vec<String>,
}

/// Who the agent appears to be, applied to every page it opens.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Identity {
    /// `navigator.userAgent` and the `User-Agent` header.
    pub user_agent: Option<String>,
    /// User-agent client hints (`navigator.userAgentData`, `Sec-CH-UA-*`).
    pub client_hints: Option<ClientHints>,
    /// `Accept-Language` and `navigator.languages` (`"fr-FR,fr"`).
    pub accept_language: Option<String>,
    /// ICU locale for `Intl` (`"fr-FR"`).
    pub locale: Option<String>,
    /// Time zone (`"Europe/Paris"`).
    pub timezone: Option<String>,
    /// Viewport `[width, height]`.
    pub viewport: Option<[u32; 2]>,
    /// Device scale factor (`window.devicePixelRatio`, 2.0 for a high-density screen); the
    /// screen's own when absent.
    pub device_scale: Option<f64>,
    /// Geolocation reported to pages.
    pub geolocation: Option<Geolocation>,
}

/// User-agent client hints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientHints {
    /// `navigator.userAgentData.platform` (`"Windows"`).
    pub platform: String,
    /// Whether the device is mobile.
    #[serde(default)]
    pub mobile: bool,
    /// Brands and their major versions.
    #[serde(default)]
    pub brands: Vec<Brand>,
}

/// A user-agent brand.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Brand {
    /// Its name (`"Chromium"`).
    pub brand: String,
    /// Its major version (`"156"`).
    pub version: String,
}

/// A position reported to pages through the Geolocation API.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Geolocation {
    /// Latitude in degrees, north positive (-90 to 90).
    pub latitude: f64,
    /// Longitude in degrees, east positive (-180 to 180).
    pub longitude: f64,
    /// Accuracy radius in metres (default 10).
    #[serde(default = "default_accuracy")]
    pub accuracy: f64,
}

fn default_accuracy() -> f64 {
    10.0
}

/// Requests to block and responses to rewrite, through CDP's Fetch domain (no proxy process).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InterceptRules {
    /// Resource types to block (`"Image"`, `"Font"`, `"Stylesheet"`, `"Media"`).
    pub block_resource_types: Vec<String>,
    /// URL patterns to block; `*` matches anything.
    pub block_urls: Vec<String>,
    /// Response bodies to rewrite.
    pub rewrite: Vec<Rewrite>,
}

impl InterceptRules {
    /// Whether any rule is set.
    pub fn is_empty(&self) -> bool {
        self.block_resource_types.is_empty()
            && self.block_urls.is_empty()
            && self.rewrite.is_empty()
    }
}

/// Replaces text in the bodies of responses whose URL matches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// URL pattern; `*` matches anything.
    pub url: String,
    /// Text to find in the body, matched literally (`*` is not a wildcard here).
    pub find: String,
    /// Text put in place of every occurrence of `find`.
    pub replace: String,
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters.
pub(crate) fn wildcard_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, rest) = match parts.split_first() {
        Some(split) => split,
        None => return text.is_empty(),
    };
    let Some(mut remaining) = text.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return remaining.is_empty();
    };
    for part in middle {
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    remaining.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::wildcard_match;

    #[test]
    fn wildcards_match_runs_of_characters() {
        assert!(wildcard_match("*", "http://a/b"));
        assert!(wildcard_match("*analytics*", "http://x/analytics.js"));
        assert!(wildcard_match(
            "http://*/api/*",
            "http://host/api/items?page=2"
        ));
        assert!(!wildcard_match("http://*/api/*", "https://host/api/items"));
        assert!(wildcard_match("exact", "exact"));
        assert!(!wildcard_match("exact", "exactly"));
        assert!(wildcard_match("*.png", "http://h/i.png"));
        assert!(!wildcard_match("*.png", "http://h/i.png?x"));
    }
}

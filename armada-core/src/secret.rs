//! Secrets by type: a config field of type [`Secret`] (a proxy password, an API key, a
//! session cookie) gives the agent its value and shows `***` everywhere else.
//!
//! Reading a `Secret` registers its value in this process; every output that could carry it
//! (a plan, an event, a result, a monitor setting, a log line, an error) goes through
//! [`redact_secrets`], which hides every registered value wherever it appears: inside a URL, a
//! message, or a JSON document. The monitor's redaction of keys that look secret
//! (`password`, `token`, …) stays as a second net for fields that are not typed as `Secret`.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use aho_corasick::AhoCorasick;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// What a secret shows instead of its value.
pub const HIDDEN: &str = "***";

/// Values shorter than this are not hidden in other text: `"on"` or `"1"` would hide half of
/// every message. A secret that short is no secret anyway.
const SHORTEST_HIDDEN: usize = 4;

/// A secret config value: the agent reads it with [`Secret::expose`]; `Debug`, `Display` and
/// `Serialize` show `***`, and any text that holds it is redacted by [`redact_secrets`].
///
/// ```
/// use armada_core::Secret;
///
/// #[derive(serde::Deserialize)]
/// struct Proxy { user: String, password: Secret }
///
/// let proxy: Proxy = serde_json::from_str(r#"{"user":"ann","password":"hunter2!"}"#).unwrap();
/// assert_eq!(proxy.password.expose(), "hunter2!");
/// assert_eq!(format!("{:?}", proxy.password), "***");
/// assert_eq!(armada_core::redact_secrets("http://ann:hunter2!@proxy"), "http://ann:***@proxy");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret of this value, registered so that outputs hide it.
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        register(&value);
        Self(value)
    }

    /// The value, for the one place that needs it (a login, a header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(HIDDEN)
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(HIDDEN)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(HIDDEN)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::new)
    }
}

/// The secrets read in this process, and a matcher over them, built when first needed after
/// one is added: a plan of 10,000 agents registers 10,000 secrets, and building it at each
/// would cost their square.
#[derive(Default)]
struct Registry {
    values: Vec<String>,
    matcher: Option<Arc<AhoCorasick>>,
}

fn registry() -> &'static RwLock<Registry> {
    static REGISTRY: OnceLock<RwLock<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(RwLock::default)
}

/// Whether any secret was read in this process: every event and result passes through
/// [`redact_secrets`], and most runs have none, so they pay one atomic load.
static ANY_SECRET: AtomicBool = AtomicBool::new(false);

fn register(value: &str) {
    if value.len() < SHORTEST_HIDDEN {
        return;
    }
    if let Ok(mut registry) = registry().write() {
        if registry.values.iter().any(|known| known == value) {
            return;
        }
        registry.values.push(value.to_owned());
        registry.matcher = None;
        ANY_SECRET.store(true, Ordering::Release);
    }
}

fn matcher() -> Option<Arc<AhoCorasick>> {
    if !ANY_SECRET.load(Ordering::Acquire) {
        return None;
    }
    if let Some(matcher) = registry()
        .read()
        .ok()
        .and_then(|registry| registry.matcher.clone())
    {
        return Some(matcher);
    }
    let mut registry = registry().write().ok()?;
    if registry.matcher.is_none() {
        // Longest first, so a secret that contains another is hidden whole.
        registry
            .values
            .sort_by_key(|value| std::cmp::Reverse(value.len()));
        registry.matcher = AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .build(&registry.values)
            .ok()
            .map(Arc::new);
    }
    registry.matcher.clone()
}

/// `text` with every secret read in this process replaced by `***`.
pub fn redact_secrets(text: &str) -> Cow<'_, str> {
    match matcher() {
        Some(matcher) if matcher.is_match(text) => {
            Cow::Owned(matcher.replace_all(text, &vec![HIDDEN; matcher.patterns_len()]))
        }
        _ => Cow::Borrowed(text),
    }
}

/// Every string of `value`, keys included, with the secrets read in this process hidden.
pub fn redact_secrets_in(value: &mut Value) {
    let Some(matcher) = matcher() else {
        return;
    };
    redact_value(&matcher, value);
}

fn redact_value(matcher: &AhoCorasick, value: &mut Value) {
    match value {
        Value::String(text) if matcher.is_match(text.as_str()) => {
            *text = matcher.replace_all(text, &vec![HIDDEN; matcher.patterns_len()]);
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| redact_value(matcher, item)),
        Value::Object(fields) if fields.keys().any(|key| matcher.is_match(key)) => {
            let taken = std::mem::take(fields);
            *fields = taken
                .into_iter()
                .map(|(key, mut item)| {
                    redact_value(matcher, &mut item);
                    let hidden = matcher.replace_all(&key, &vec![HIDDEN; matcher.patterns_len()]);
                    (hidden, item)
                })
                .collect();
        }
        Value::Object(fields) => fields
            .values_mut()
            .for_each(|item| redact_value(matcher, item)),
        _ => {}
    }
}

//! What scripts do on a page: wait for a condition or an element, read text, click, fill.
//!
//! A wait runs inside the page: the condition is checked on every change of the document (a
//! `MutationObserver`) and every 50 ms for state that is not the document's, and the answer
//! comes back in one DevTools round trip as soon as it holds, where a loop here would poll
//! with a round trip and a sleep per check. A navigation in the middle of a wait (a form
//! submitted, a redirect) starts it again in the new document. Every wait is bounded by
//! `browser.page_load_timeout_secs`, and all of them by the attempt's `job_timeout_secs`.

use std::time::{Duration, Instant};

use armada_core::ScriptError;
use chromiumoxide::Page;
use chromiumoxide::cdp::browser_protocol::input::InsertTextParams;
use chromiumoxide::cdp::js_protocol::runtime::EvaluateParams;
use serde_json::Value;

use super::{BrowserError, BrowserJob};

/// The longest one in-page wait lasts before it answers "not yet" and is asked again: a
/// DevTools command has its own time limit (the page-load limit), which a wait must not reach.
const WAIT_SLICE: Duration = Duration::from_secs(5);

/// How long to leave a page between two documents before asking again.
const BETWEEN_DOCUMENTS: Duration = Duration::from_millis(50);

impl<P, C> BrowserJob<P, C> {
    /// Waits until the JavaScript expression `condition` is truthy in the page and returns its
    /// value (as JSON). An exception counts as "not yet": `document.querySelector('#a').value`
    /// waits for `#a` to exist. Fails as retryable when the condition has not held within
    /// `browser.page_load_timeout_secs`.
    pub async fn wait_until(&self, condition: &str) -> Result<Value, ScriptError> {
        self.unless_browser_dies(wait_in_page(&self.page, condition, self.wait_limit))
            .await
    }

    /// Waits until an element matches the CSS `selector`.
    pub async fn wait_for_selector(&self, selector: &str) -> Result<(), ScriptError> {
        let condition = format!("document.querySelector({}) !== null", js_string(selector));
        self.wait_until(&condition).await.map(drop)
    }

    /// The text of the first element matching `selector` (its `textContent`), once there is
    /// one and the document is parsed: while it loads, the parser may have inserted the
    /// element and not yet its text.
    pub async fn text(&self, selector: &str) -> Result<String, ScriptError> {
        let condition = format!(
            "(() => {{ const element = document.readyState !== 'loading' \
             && document.querySelector({}); \
             return element && {{ text: element.textContent }}; }})()",
            js_string(selector)
        );
        let found = self.wait_until(&condition).await?;
        Ok(found["text"].as_str().unwrap_or_default().to_owned())
    }

    /// Clicks the first element matching `selector` once there is one, with the mouse: the
    /// element is scrolled into view and receives trusted pointer events at its centre.
    pub async fn click(&self, selector: &str) -> Result<(), ScriptError> {
        self.wait_for_selector(selector).await?;
        let click = async {
            let element = self.page.find_element(selector).await?;
            element.click().await?;
            Ok::<_, chromiumoxide::error::CdpError>(())
        };
        self.unless_browser_dies(async {
            click
                .await
                .map_err(|error| ScriptError::retry(format!("cannot click {selector}: {error}")))
        })
        .await
    }

    /// Replaces the value of the first field matching `selector` (an `input`, a `textarea`, or
    /// an editable element) with `value`, once there is one, as typing it would: the field is
    /// focused, its content selected, and the text inserted as trusted input.
    pub async fn fill(&self, selector: &str, value: &str) -> Result<(), ScriptError> {
        let select = format!(
            "(() => {{ const field = document.querySelector({}); if (!field) return false; \
             field.focus(); \
             if (typeof field.select === 'function') {{ field.select(); }} else {{ \
               const range = document.createRange(); range.selectNodeContents(field); \
               const selection = getSelection(); selection.removeAllRanges(); \
               selection.addRange(range); }} \
             return true; }})()",
            js_string(selector)
        );
        self.wait_until(&select).await?;
        let insert = async {
            if value.is_empty() {
                // Inserting nothing leaves the selection: delete it instead.
                let delete = "document.execCommand('delete'), true";
                evaluate_expression(&self.page, delete).await.map(drop)
            } else {
                self.page
                    .execute(InsertTextParams::new(value))
                    .await
                    .map(drop)
                    .map_err(|error| ScriptError::retry(BrowserError::Cdp(error)))
            }
        };
        self.unless_browser_dies(insert).await
    }
}

/// Waits for `condition` in slices of at most [`WAIT_SLICE`], until it holds or `limit` ends.
async fn wait_in_page(page: &Page, condition: &str, limit: Duration) -> Result<Value, ScriptError> {
    let deadline = Instant::now() + limit;
    let mut last_error = None;
    loop {
        let slice = deadline
            .saturating_duration_since(Instant::now())
            .min(WAIT_SLICE);
        if slice.is_zero() {
            break;
        }
        match evaluate_expression(page, &wait_script(condition, slice)).await {
            Ok(Value::Object(mut answer)) => {
                if let Some(value) = answer.remove("value") {
                    return Ok(value);
                }
            }
            Ok(_) => {}
            // The document went (a navigation) or is not there yet: wait in the next one.
            Err(error) => {
                last_error = Some(error);
                tokio::time::sleep(BETWEEN_DOCUMENTS).await;
            }
        }
    }
    let cause = last_error.map_or_else(String::new, |error| format!(" (last: {error})"));
    Err(ScriptError::retry(format!(
        "`{condition}` did not hold within {:.1}s{cause}",
        limit.as_secs_f64()
    )))
}

/// A promise that resolves with `{value}` when `condition` holds, or `{pending: true}` after
/// `slice`.
fn wait_script(condition: &str, slice: Duration) -> String {
    format!(
        "new Promise(resolve => {{
          let observer, interval, timer;
          const done = answer => {{
            clearInterval(interval); clearTimeout(timer);
            if (observer) observer.disconnect();
            resolve(answer);
          }};
          const check = () => {{
            try {{ const value = ({condition}); if (value) {{ done({{ value }}); return true; }} }}
            catch (error) {{}}
            return false;
          }};
          if (check()) return;
          observer = new MutationObserver(check);
          observer.observe(document, {{ subtree: true, childList: true, attributes: true, characterData: true }});
          interval = setInterval(check, 50);
          timer = setTimeout(() => done({{ pending: true }}), {});
        }})",
        slice.as_millis()
    )
}

/// Evaluates `expression` as an expression (chromiumoxide guesses whether a string is a
/// function; these never are) and returns its value, awaiting a promise.
async fn evaluate_expression(page: &Page, expression: &str) -> Result<Value, ScriptError> {
    match page
        .evaluate_expression(EvaluateParams::new(expression))
        .await
    {
        Ok(result) => Ok(result.value().cloned().unwrap_or(Value::Null)),
        Err(error) => Err(super::script_error(error)),
    }
}

/// `text` as a JavaScript string literal.
fn js_string(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

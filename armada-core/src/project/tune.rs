//! `$env_` placeholders: whole strings replaced by the tune file's value, keeping its JSON type.

use serde_json::{Map, Value};

use super::{Diagnostic, Diagnostics};

const PREFIX: &str = "$env_";

/// Replaces every string that is exactly `$env_NAME`, in objects and arrays at any depth, by
/// `tune[NAME]`. `path` is the field path of `value`, for diagnostics.
pub(super) fn substitute(
    value: &mut Value,
    path: &mut String,
    tune: Option<&Map<String, Value>>,
    template_name: &str,
    tune_name: &str,
    diagnostics: &mut Diagnostics,
) {
    match value {
        Value::String(text) => {
            let Some(name) = text.strip_prefix(PREFIX).filter(|name| !name.is_empty()) else {
                return;
            };
            match tune.and_then(|tune| tune.get(name)) {
                Some(replacement) => *value = replacement.clone(),
                None => {
                    let why = if tune.is_some() {
                        format!("has no value in {tune_name}: add \"{name}\": <value> to it")
                    } else {
                        format!(
                            "has no value because {tune_name} does not exist: create it with \
                             \"{name}\": <value>, or choose another tune file"
                        )
                    };
                    diagnostics.push(
                        Diagnostic::file(template_name, format!("placeholder `{text}` {why}"))
                            .at_field(path.clone()),
                    );
                }
            }
        }
        Value::Array(items) => {
            for (position, item) in items.iter_mut().enumerate() {
                let length = path.len();
                path.push_str(&format!("[{position}]"));
                substitute(item, path, tune, template_name, tune_name, diagnostics);
                path.truncate(length);
            }
        }
        Value::Object(fields) => {
            for (key, item) in fields.iter_mut() {
                let length = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                substitute(item, path, tune, template_name, tune_name, diagnostics);
                path.truncate(length);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

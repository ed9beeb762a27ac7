//! Keys a message holds that its type never reads: a misspelled CSV column (`nmae`) or
//! template key (`wrok_ms`) would otherwise leave every job on the default value and say
//! nothing. Every one is an error naming where it was written and, when a known key is close,
//! the key that was meant. A type opts in to extra keys by reading them: a
//! `#[serde(flatten)]` map, a `serde_json::Value`, or `serde::de::IgnoredAny` for the whole
//! message (`PlainAgent`'s default config).

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Diagnostic, Diagnostics};

/// Checks `message` against `T`: the first problem as `(field path, problem)`, or the paths of
/// the keys `T` did not read.
pub(super) fn check<T: DeserializeOwned>(message: &Value) -> Result<Vec<String>, (String, String)> {
    let mut unread = Vec::new();
    let mut track = serde_path_to_error::Track::new();
    let tracked = serde_path_to_error::Deserializer::new(message, &mut track);
    let read = serde_ignored::deserialize::<_, _, T>(tracked, |path| {
        // serde_ignored writes `?` for the inside of an `Option`, which no message spells.
        let keys: Vec<String> = path
            .to_string()
            .split('.')
            .filter(|segment| !matches!(*segment, "" | "?"))
            .map(str::to_owned)
            .collect();
        unread.push(keys.join("."));
    });
    match read {
        Ok(_) => Ok(unread
            .into_iter()
            // The whole message left unread is a type that takes anything.
            .filter(|path| !path.is_empty())
            .collect()),
        Err(error) => {
            let path = track.path().to_string();
            let path = if path == "." { String::new() } else { path };
            Err((path, error.to_string()))
        }
    }
}

/// Where an unread key was written, for its diagnostic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Origin {
    /// In a CSV file's header: its line is 1, its column is known.
    Column {
        /// The file.
        file: String,
        /// The header's column, from 1.
        column: u64,
    },
    /// In a message with no file position: the template's default message, or a message made
    /// in code (`prefix` is the field path it sits under).
    Message {
        /// The file (`config_template.json`, or `(in code)`).
        file: String,
        /// The path the key's own path is joined to.
        prefix: String,
    },
}

/// Unread keys of one kind of message, each reported once however many messages hold it.
#[derive(Debug)]
pub(super) struct UnreadKeys {
    /// What the messages are, as a message says it: `job payload`, `agent config`.
    kind: &'static str,
    found: BTreeMap<(Origin, String), Vec<String>>,
}

impl UnreadKeys {
    pub(super) fn new(kind: &'static str) -> Self {
        Self {
            kind,
            found: BTreeMap::new(),
        }
    }

    /// Notes `path`, unread in a message where `siblings` are the keys known at its level.
    pub(super) fn add(&mut self, origin: Origin, path: String, siblings: Vec<String>) {
        self.found.entry((origin, path)).or_insert(siblings);
    }

    pub(super) fn report(self, diagnostics: &mut Diagnostics) {
        for ((origin, path), siblings) in self.found {
            let key = path.rsplit('.').next().unwrap_or(&path);
            let mut problem = format!("`{key}` is not a field of the {}", self.kind);
            match closest(key, &siblings) {
                Some(meant) => problem.push_str(&format!("; did you mean `{meant}`?")),
                None => problem.push_str(
                    "; nothing reads it (remove it, or add the field to the script's type)",
                ),
            }
            diagnostics.push(match origin {
                Origin::Column { file, column } => Diagnostic::file(&file, problem)
                    .at_line(1)
                    .at_column(column)
                    .at_field(path),
                Origin::Message { file, prefix } => {
                    Diagnostic::file(&file, problem).at_field(super::join_path(&prefix, &path))
                }
            });
        }
    }
}

/// The keys a misspelled `path` was probably meant to be: the fields `T` declares next to it,
/// and the keys `message` holds next to it that `T` reads.
pub(super) fn known_siblings<T: DeserializeOwned>(
    message: &Value,
    path: &str,
    unread: &[String],
) -> Vec<String> {
    let mut known = declared_siblings::<T>(path);
    known.extend(read_siblings(message, path, unread));
    known.sort();
    known.dedup();
    known
}

/// The keys of `message`'s object holding `path`, except those `unread` names.
fn read_siblings(message: &Value, path: &str, unread: &[String]) -> Vec<String> {
    let parent = path.rsplit_once('.').map_or("", |(parent, _)| parent);
    let mut object = Some(message);
    for segment in parent.split('.').filter(|segment| !segment.is_empty()) {
        object = object.and_then(|value| value.get(segment));
    }
    let Some(Value::Object(object)) = object else {
        return Vec::new();
    };
    object
        .keys()
        .map(|key| join_key(parent, key))
        .filter(|sibling| !unread.contains(sibling))
        .map(|sibling| sibling.rsplit('.').next().unwrap_or(&sibling).to_owned())
        .collect()
}

fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// Whether `object` holds `path` (dotted keys).
pub(super) fn holds(object: &serde_json::Map<String, Value>, path: &str) -> bool {
    let mut segments = path.split('.');
    let Some(first) = segments.next() else {
        return false;
    };
    let mut value = object.get(first);
    for segment in segments {
        value = value.and_then(|value| value.get(segment));
    }
    value.is_some()
}

/// The known key closest to `key`, when it is close enough to be a misspelling of it.
fn closest<'a>(key: &str, known: &'a [String]) -> Option<&'a str> {
    known
        .iter()
        .map(|candidate| (strsim::damerau_levenshtein(key, candidate), candidate))
        .filter(|(distance, candidate)| {
            *distance <= 2.max(key.len().min(candidate.len()) / 3) && *distance < key.len()
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate.as_str())
}

/// The fields `T` declares for the object holding `path`, when serde says (a struct's; not a
/// map's or an untagged enum's), found by deserializing `T` from a probe that walks to it.
pub(super) fn declared_siblings<T: DeserializeOwned>(path: &str) -> Vec<String> {
    let segments: Vec<&str> = path.split('.').collect();
    let Some((_, parents)) = segments.split_last() else {
        return Vec::new();
    };
    let mut found = None;
    let _ = T::deserialize(FieldProbe {
        parents,
        found: &mut found,
    });
    found.unwrap_or_default()
}

/// A deserializer that follows `parents` into a type and records the field names of the struct
/// it reaches; every other request ends the walk.
struct FieldProbe<'a, 'p> {
    parents: &'p [&'p str],
    found: &'a mut Option<Vec<String>>,
}

/// How the probe ends its walk: nothing about it is reported.
#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("probe ended")
    }
}

impl std::error::Error for Stop {}

impl serde::de::Error for Stop {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        Stop
    }
}

impl<'de> serde::Deserializer<'de> for FieldProbe<'_, '_> {
    type Error = Stop;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Stop> {
        match self.parents.split_first() {
            None => {
                *self.found = Some(fields.iter().map(|field| (*field).to_owned()).collect());
                Err(Stop)
            }
            Some((first, rest)) => visitor.visit_map(ProbeMap {
                key: Some(first),
                probe: Some(FieldProbe {
                    parents: rest,
                    found: self.found,
                }),
            }),
        }
    }

    fn deserialize_option<V: serde::de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: serde::de::Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Stop> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

/// The one entry a probe offers a struct: the key it walks into.
struct ProbeMap<'a, 'p> {
    key: Option<&'p str>,
    probe: Option<FieldProbe<'a, 'p>>,
}

impl<'de> serde::de::MapAccess<'de> for ProbeMap<'_, '_> {
    type Error = Stop;

    fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Stop> {
        match self.key.take() {
            Some(key) => seed
                .deserialize(serde::de::value::StrDeserializer::<Stop>::new(key))
                .map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Stop> {
        match self.probe.take() {
            Some(probe) => seed.deserialize(probe),
            None => Err(Stop),
        }
    }
}

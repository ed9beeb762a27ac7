//! `data_agent.csv` / `data_job.csv`: per-index overrides of the default messages.
//!
//! RFC 4180. The first column holds the index (`targetted_agent` / `targetted_job`); every other
//! header is a key of the message, dotted headers (`proxy.server`) address nested keys. A cell
//! starting with `{` or `[` must be JSON; a cell that is a JSON number, boolean, null or quoted
//! string is taken as that; anything else is a string; an empty cell keeps the default.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::{Diagnostic, Diagnostics, NamedFile};

/// Nesting a dotted header may address; deeper messages are refused rather than risking the
/// stack in recursive merging and checking.
const MAX_HEADER_DEPTH: usize = 32;

/// Problems reported per file before the rest are summarised, so a broken million-row file does
/// not bury the first, most useful lines.
pub(super) const MAX_DIAGNOSTICS_PER_FILE: usize = 50;

/// One row: the index it targets and the object to deep-merge into the default message.
#[derive(Debug)]
pub(super) struct Row {
    pub line: u64,
    pub index: u64,
    pub overlay: Map<String, Value>,
}

/// A parsed override file.
#[derive(Debug, Default)]
pub(super) struct Overrides {
    pub file: String,
    pub rows: Vec<Row>,
    /// Data rows in the file, with or without problems: the job count when `jobs` is unset.
    pub records: u64,
}

pub(super) fn parse(
    file: &NamedFile,
    index_column: &str,
    diagnostics: &mut Diagnostics,
) -> Overrides {
    let mut problems = Problems {
        file: &file.name,
        contents: &file.contents,
        found: 0,
        diagnostics,
    };
    let mut overrides = Overrides {
        file: file.name.clone(),
        rows: Vec::new(),
        records: 0,
    };
    if file.contents.iter().all(u8::is_ascii_whitespace) {
        return overrides;
    }
    if let Some(line) = unclosed_quote(&file.contents) {
        problems.push(
            Diagnostic::file(
                &file.name,
                "a quoted cell opened here is never closed: every later row would be read into \
                 it; close the quote (a quote inside a quoted cell is written twice: \"\")",
            )
            .at_line(line),
        );
        problems.finish();
        return overrides;
    }
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(file.contents.as_slice());
    let headers = match reader.headers() {
        Ok(headers) => headers.clone(),
        Err(error) => {
            problems.csv_error(&error);
            problems.finish();
            return overrides;
        }
    };
    let first = headers.get(0).unwrap_or("").trim_start_matches('\u{feff}');
    if first != index_column {
        problems.push(
            Diagnostic::file(
                &file.name,
                format!(
                    "the first column must be `{index_column}` (the index each row targets), \
                     found `{first}`"
                ),
            )
            .at_line(1)
            .at_column(1),
        );
        problems.finish();
        return overrides;
    }
    let mut columns: HashMap<&str, usize> = HashMap::new();
    let paths: Vec<Option<Vec<String>>> = headers
        .iter()
        .enumerate()
        .skip(1)
        .map(|(position, header)| {
            let segments: Vec<String> = header.split('.').map(str::to_owned).collect();
            let at = |diagnostic: Diagnostic| diagnostic.at_line(1).at_column(position as u64 + 1);
            if let Some(first) = columns.insert(header, position) {
                problems.push(at(Diagnostic::file(
                    &file.name,
                    format!(
                        "header `{header}` is in columns {} and {}: a row would set it twice; \
                         keep one",
                        first + 1,
                        position + 1
                    ),
                )));
                None
            } else if header.trim() != header {
                problems.push(at(Diagnostic::file(
                    &file.name,
                    format!(
                        "header `{header}` has spaces around it (after a comma?): write `{}`",
                        header.trim()
                    ),
                )));
                None
            } else if segments.len() > MAX_HEADER_DEPTH {
                problems.push(
                    Diagnostic::file(
                        &file.name,
                        format!(
                            "header `{}…` nests {} keys deep; at most {MAX_HEADER_DEPTH} are \
                             allowed",
                            header.chars().take(40).collect::<String>(),
                            segments.len()
                        ),
                    )
                    .at_line(1)
                    .at_column(position as u64 + 1),
                );
                None
            } else if segments.iter().any(String::is_empty) {
                problems.push(
                    Diagnostic::file(
                        &file.name,
                        format!(
                            "header `{header}` is not a key: use a name, or dotted names for \
                             nested keys (`proxy.server`)"
                        ),
                    )
                    .at_line(1)
                    .at_column(position as u64 + 1),
                );
                None
            } else {
                Some(segments)
            }
        })
        .collect();
    let mut seen: HashMap<u64, u64> = HashMap::new();
    let mut record = csv::StringRecord::new();
    loop {
        let read = reader.read_record(&mut record);
        if !matches!(read, Ok(false)) {
            overrides.records += 1;
        }
        match read {
            Ok(false) => break,
            Ok(true) => {}
            Err(error) => {
                problems.csv_error(&error);
                if matches!(error.kind(), csv::ErrorKind::Io(_)) {
                    break;
                }
                continue;
            }
        }
        let line = record
            .position()
            .map_or(0, |position| line_of(&file.contents, position));
        if record.len() != headers.len() {
            let hint = if record.len() > headers.len()
                && record
                    .iter()
                    .skip(1)
                    .any(|cell| cell.trim_start().starts_with(['{', '[']))
            {
                "; a JSON cell that contains commas must be quoted: \"{\"\"key\"\": 1, \
                 \"\"other\"\": 2}\""
            } else {
                ""
            };
            problems.push(
                Diagnostic::file(
                    &file.name,
                    format!(
                        "the header has {} columns but this row has {}{hint}",
                        headers.len(),
                        record.len()
                    ),
                )
                .at_line(line),
            );
            continue;
        }
        let raw_index = record.get(0).unwrap_or("").trim();
        let Ok(index) = raw_index.parse::<u64>() else {
            problems.push(
                Diagnostic::file(
                    &file.name,
                    format!("`{raw_index}` is not an index: use a whole number from 0"),
                )
                .at_line(line)
                .at_column(1)
                .at_field(index_column),
            );
            continue;
        };
        if let Some(first_line) = seen.insert(index, line) {
            problems.push(
                Diagnostic::file(
                    &file.name,
                    format!("index {index} is targeted twice (lines {first_line} and {line})"),
                )
                .at_line(line)
                .at_column(1)
                .at_field(index_column),
            );
            continue;
        }
        let mut overlay = Map::new();
        let mut row_ok = true;
        for (position, (cell, path)) in record.iter().skip(1).zip(&paths).enumerate() {
            let Some(path) = path else { continue };
            if cell.is_empty() {
                continue;
            }
            match parse_cell(cell) {
                Ok(value) => insert_at(&mut overlay, path, value),
                Err(message) => {
                    row_ok = false;
                    problems.push(
                        Diagnostic::file(&file.name, message)
                            .at_line(line)
                            .at_column(position as u64 + 2)
                            .at_field(path.join(".")),
                    );
                }
            }
        }
        if row_ok {
            overrides.rows.push(Row {
                line,
                index,
                overlay,
            });
        }
    }
    problems.finish();
    overrides
}

/// Reads one cell: JSON when it looks like JSON, a string otherwise.
pub(super) fn parse_cell(cell: &str) -> Result<Value, String> {
    let trimmed = cell.trim();
    if trimmed.starts_with(['{', '[']) {
        return serde_json::from_str(trimmed).map_err(|error| {
            format!(
                "the cell starts like JSON but is not valid JSON ({error}); quote the whole \
                 cell in the CSV and double its inner quotes"
            )
        });
    }
    match serde_json::from_str::<Value>(trimmed) {
        Ok(value @ (Value::Number(_) | Value::Bool(_) | Value::Null | Value::String(_))) => {
            Ok(value)
        }
        _ => Ok(Value::String(cell.to_owned())),
    }
}

fn insert_at(target: &mut Map<String, Value>, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut map = target;
    for key in parents {
        let slot = map
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        let Value::Object(inner) = slot else {
            unreachable!("the slot was just made an object")
        };
        map = inner;
    }
    match map.get_mut(last) {
        Some(existing) => super::deep_merge(existing, value),
        None => {
            map.insert(last.clone(), value);
        }
    }
}

/// The line (from 1) of a quoted cell that the file never closes, read as the csv crate reads
/// it: a quote opens a cell only at its start, and `""` inside a quoted cell is a quote.
fn unclosed_quote(contents: &[u8]) -> Option<u64> {
    let (mut line, mut opened) = (1, 0);
    let (mut quoted, mut cell_start) = (false, true);
    let mut bytes = contents.iter().peekable();
    while let Some(&byte) = bytes.next() {
        if byte == b'\n' {
            line += 1;
        }
        if quoted {
            if byte == b'"' {
                if bytes.peek() == Some(&&b'"') {
                    bytes.next();
                } else {
                    quoted = false;
                }
            }
            continue;
        }
        match byte {
            b'"' if cell_start => {
                quoted = true;
                opened = line;
                cell_start = false;
            }
            b',' | b'\n' | b'\r' => cell_start = true,
            _ => cell_start = false,
        }
    }
    quoted.then_some(opened)
}

/// The line (from 1) where the record at `position` starts. The csv crate counts lines at
/// `\n` after it has ended a record at `\r`, so its own line number is one short for every
/// record of a CRLF file; the byte offset is right, once past the end of the previous line.
fn line_of(contents: &[u8], position: &csv::Position) -> u64 {
    let mut start = usize::try_from(position.byte())
        .unwrap_or(usize::MAX)
        .min(contents.len());
    while contents
        .get(start)
        .is_some_and(|byte| matches!(byte, b'\r' | b'\n'))
    {
        start += 1;
    }
    1 + contents[..start]
        .iter()
        .filter(|&&byte| byte == b'\n')
        .count() as u64
}

struct Problems<'a> {
    file: &'a str,
    contents: &'a [u8],
    found: usize,
    diagnostics: &'a mut Diagnostics,
}

impl Problems<'_> {
    fn push(&mut self, diagnostic: Diagnostic) {
        self.found += 1;
        if self.found <= MAX_DIAGNOSTICS_PER_FILE {
            self.diagnostics.push(diagnostic);
        }
    }

    fn csv_error(&mut self, error: &csv::Error) {
        let file = self.file.to_owned();
        let diagnostic = match error.kind() {
            csv::ErrorKind::Utf8 { pos, err } => {
                let mut diagnostic = Diagnostic::file(file, "the cell is not valid UTF-8 text")
                    .at_column(err.field() as u64 + 1);
                if let Some(pos) = pos {
                    diagnostic = diagnostic.at_line(line_of(self.contents, pos));
                }
                diagnostic
            }
            csv::ErrorKind::Io(io) => Diagnostic::file(file, format!("cannot read: {io}")),
            _ => {
                let mut diagnostic = Diagnostic::file(file, format!("malformed CSV: {error}"));
                if let Some(pos) = error.position() {
                    diagnostic = diagnostic.at_line(line_of(self.contents, pos));
                }
                diagnostic
            }
        };
        self.push(diagnostic);
    }

    fn finish(self) {
        if self.found > MAX_DIAGNOSTICS_PER_FILE {
            self.diagnostics.push(Diagnostic::file(
                self.file,
                format!(
                    "{} more problems in this file are not shown",
                    self.found - MAX_DIAGNOSTICS_PER_FILE
                ),
            ));
        }
    }
}

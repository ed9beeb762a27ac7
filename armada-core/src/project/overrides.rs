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

/// A parsed override file (`data_agent.csv` or `data_job.csv`): its rows, each with the
/// index it targets and its line.
#[derive(Debug, Default)]
pub(super) struct Overrides {
    pub file: String,
    pub rows: Vec<Row>,
    /// Data rows in the file, with or without problems: the job count when `jobs` is unset.
    pub records: u64,
    /// Each accepted header's key path (dotted) and column, from 1: where a key no type reads
    /// was written.
    pub columns: Vec<(String, u64)>,
}

/// The column whose header set `path` (or the object holding it), among a file's `columns`.
pub(super) fn column_of(columns: &[(String, u64)], path: &str) -> Option<u64> {
    columns
        .iter()
        .filter(|(header, _)| path == header.as_str() || path.starts_with(&format!("{header}.")))
        .map(|(_, column)| *column)
        .next()
}

pub(super) fn parse(
    file: &NamedFile,
    index_column: &str,
    diagnostics: &mut Diagnostics,
) -> Overrides {
    let mut overrides = Overrides {
        file: file.name.clone(),
        rows: Vec::new(),
        records: 0,
        columns: Vec::new(),
    };
    if file.contents.iter().all(u8::is_ascii_whitespace) {
        return overrides;
    }
    let mut problems = Problems {
        file: &file.name,
        contents: &file.contents,
        found: 0,
        diagnostics,
    };
    read_into(&mut overrides, &file.contents, index_column, &mut problems);
    problems.finish();
    overrides
}

/// Reads the rows into `overrides`, unless a problem leaves no row readable: then that problem
/// alone is reported, as it would cause one for every row.
fn read_into(
    overrides: &mut Overrides,
    contents: &[u8],
    index_column: &str,
    problems: &mut Problems<'_>,
) {
    if let Some(line) = unclosed_quote(contents) {
        problems.push(
            problems
                .diagnostic(
                    "a quoted cell opened here is never closed: every later row would be read \
                     into it; close the quote (a quote inside a quoted cell is written twice: \
                     \"\")",
                )
                .at_line(line),
        );
        return;
    }
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(contents);
    if let Some(mut rows) = RowReader::from_header(&mut reader, contents, index_column, problems) {
        overrides.columns = rows
            .paths
            .iter()
            .zip(2..)
            .filter_map(|(path, column)| Some((path.as_ref()?.join("."), column)))
            .collect();
        rows.read_all(&mut reader, overrides, problems);
    }
}

/// The key path of each column after the index; `None` where the header is refused (reported).
fn header_paths(
    headers: &csv::StringRecord,
    problems: &mut Problems<'_>,
) -> Vec<Option<Vec<String>>> {
    let mut column_of: HashMap<&str, usize> = HashMap::new();
    headers
        .iter()
        .enumerate()
        .skip(1)
        .map(|(position, header)| {
            let previous = column_of.insert(header, position);
            match header_path(header, previous, position) {
                Ok(path) => Some(path),
                Err(message) => {
                    problems.push(
                        problems
                            .diagnostic(message)
                            .at_line(1)
                            .at_column(position as u64 + 1),
                    );
                    None
                }
            }
        })
        .collect()
}

/// The key path the header at `position` sets, or why it sets none. `previous` is the position
/// of the same header earlier in the row, if any.
fn header_path(
    header: &str,
    previous: Option<usize>,
    position: usize,
) -> Result<Vec<String>, String> {
    let segments: Vec<String> = header.split('.').map(str::to_owned).collect();
    if let Some(previous) = previous {
        Err(format!(
            "header `{header}` is in columns {} and {}: a row would set it twice; keep one",
            previous + 1,
            position + 1
        ))
    } else if header.trim() != header {
        Err(format!(
            "header `{header}` has spaces around it (after a comma?): write `{}`",
            header.trim()
        ))
    } else if segments.len() > MAX_HEADER_DEPTH {
        Err(format!(
            "header `{}…` nests {} keys deep; at most {MAX_HEADER_DEPTH} are allowed",
            header.chars().take(40).collect::<String>(),
            segments.len()
        ))
    } else if segments.iter().any(String::is_empty) {
        Err(format!(
            "header `{header}` is not a key: use a name, or dotted names for nested keys \
             (`proxy.server`)"
        ))
    } else {
        Ok(segments)
    }
}

/// Walks the data rows of a file whose header names the index column first.
struct RowReader<'a> {
    index_column: &'a str,
    /// Cells a row must have: as many as the header.
    width: usize,
    /// The key path of each column after the index; `None` for a refused header, whose cells
    /// are ignored.
    paths: Vec<Option<Vec<String>>>,
    /// The line of the latest row targeting each index.
    line_of_index: HashMap<u64, u64>,
    lines: LineCounter<'a>,
}

impl<'a> RowReader<'a> {
    /// `None` when the header cannot be read or does not start with the index column: no row
    /// could then be placed.
    fn from_header(
        reader: &mut csv::Reader<&[u8]>,
        contents: &'a [u8],
        index_column: &'a str,
        problems: &mut Problems<'_>,
    ) -> Option<Self> {
        let headers = match reader.headers() {
            Ok(headers) => headers,
            Err(error) => {
                problems.csv_error(&error);
                return None;
            }
        };
        // Spreadsheet programs may start the file with a byte order mark.
        let first = headers.get(0).unwrap_or("").trim_start_matches('\u{feff}');
        if first != index_column {
            problems.push(
                problems
                    .diagnostic(format!(
                        "the first column must be `{index_column}` (the index each row targets), \
                         found `{first}`"
                    ))
                    .at_line(1)
                    .at_column(1),
            );
            return None;
        }
        Some(Self {
            index_column,
            width: headers.len(),
            paths: header_paths(headers, problems),
            line_of_index: HashMap::new(),
            lines: LineCounter {
                contents,
                counted_to: 0,
                newlines: 0,
            },
        })
    }

    fn read_all(
        &mut self,
        reader: &mut csv::Reader<&[u8]>,
        overrides: &mut Overrides,
        problems: &mut Problems<'_>,
    ) {
        let mut record = csv::StringRecord::new();
        loop {
            let read = reader.read_record(&mut record);
            if let Ok(false) = read {
                break;
            }
            overrides.records += 1;
            if let Err(error) = read {
                problems.csv_error(&error);
                // Past a read failure nothing more comes; past a malformed row, the next one
                // may well be sound.
                if matches!(error.kind(), csv::ErrorKind::Io(_)) {
                    break;
                }
                continue;
            }
            overrides.rows.extend(self.row(&record, problems));
        }
    }

    /// The row, or `None` when it has a problem (reported).
    fn row(&mut self, record: &csv::StringRecord, problems: &mut Problems<'_>) -> Option<Row> {
        let line = record
            .position()
            .map_or(0, |position| self.lines.line_of(position));
        if let Some(message) = self.width_problem(record) {
            problems.push(problems.diagnostic(message).at_line(line));
            return None;
        }
        let index = match self.claim_index(record, line) {
            Ok(index) => index,
            Err(message) => {
                problems.push(
                    problems
                        .diagnostic(message)
                        .at_line(line)
                        .at_column(1)
                        .at_field(self.index_column),
                );
                return None;
            }
        };
        let overlay = self.overlay(record, line, problems)?;
        Some(Row {
            line,
            index,
            overlay,
        })
    }

    fn width_problem(&self, record: &csv::StringRecord) -> Option<String> {
        if record.len() == self.width {
            return None;
        }
        let hint = if record.len() > self.width
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
        Some(format!(
            "the header has {} columns but this row has {}{hint}",
            self.width,
            record.len()
        ))
    }

    /// The index the row at `line` targets, claimed for it, or why it cannot have it.
    fn claim_index(&mut self, record: &csv::StringRecord, line: u64) -> Result<u64, String> {
        let raw_index = record.get(0).unwrap_or("").trim();
        let Ok(index) = raw_index.parse::<u64>() else {
            return Err(format!(
                "`{raw_index}` is not an index: use a whole number from 0"
            ));
        };
        match self.line_of_index.insert(index, line) {
            Some(earlier_line) => Err(format!(
                "index {index} is targeted twice (lines {earlier_line} and {line})"
            )),
            None => Ok(index),
        }
    }

    /// The object the row's cells make, or `None` when a cell is refused (each is reported).
    fn overlay(
        &self,
        record: &csv::StringRecord,
        line: u64,
        problems: &mut Problems<'_>,
    ) -> Option<Map<String, Value>> {
        let mut overlay = Map::new();
        let mut refused = false;
        for (position, (cell, path)) in record.iter().skip(1).zip(&self.paths).enumerate() {
            let Some(path) = path else { continue };
            if cell.is_empty() {
                continue;
            }
            match parse_cell(cell) {
                Ok(value) => insert_at(&mut overlay, path, value),
                Err(message) => {
                    refused = true;
                    problems.push(
                        problems
                            .diagnostic(message)
                            .at_line(line)
                            // Columns count from 1, and the index column was skipped.
                            .at_column(position as u64 + 2)
                            .at_field(path.join(".")),
                    );
                }
            }
        }
        (!refused).then_some(overlay)
    }
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
    LineCounter {
        contents,
        counted_to: 0,
        newlines: 0,
    }
    .line_of(position)
}

/// Lines of records met in order, each counted from where the last one was: counting from the
/// start of the file for every row made planning a 100,000-row file take 80 s.
struct LineCounter<'a> {
    contents: &'a [u8],
    counted_to: usize,
    newlines: u64,
}

impl LineCounter<'_> {
    /// The line a record at `position` starts on, from 1. A record's position may fall on the
    /// line break before it (the CSV reader's, with CRLF), which is skipped.
    fn line_of(&mut self, position: &csv::Position) -> u64 {
        let mut start = usize::try_from(position.byte())
            .unwrap_or(usize::MAX)
            .min(self.contents.len());
        while self
            .contents
            .get(start)
            .is_some_and(|byte| matches!(byte, b'\r' | b'\n'))
        {
            start += 1;
        }
        if start < self.counted_to {
            // Out of order: count again from the start.
            self.counted_to = 0;
            self.newlines = 0;
        }
        self.newlines += self.contents[self.counted_to..start]
            .iter()
            .filter(|&&byte| byte == b'\n')
            .count() as u64;
        self.counted_to = start;
        1 + self.newlines
    }
}

struct Problems<'a> {
    file: &'a str,
    contents: &'a [u8],
    found: usize,
    diagnostics: &'a mut Diagnostics,
}

impl Problems<'_> {
    fn diagnostic(&self, message: impl Into<String>) -> Diagnostic {
        Diagnostic::file(self.file, message)
    }

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

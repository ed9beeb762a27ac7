//! `results.jsonl`, written as a run goes: one line per job, whoever writes it.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use armada_core::wire::JobResult;
use armada_core::{JobId, RunId};

use crate::{Error, Result};

/// `results.jsonl`: one JSON line per job, in the order jobs ended. A job already in the file
/// is not written again, so a file resumed by `attach` after its launcher died ends with
/// exactly one line per job.
pub struct ResultsFile {
    path: PathBuf,
    out: BufWriter<File>,
    written: HashSet<u64>,
}

impl ResultsFile {
    fn error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::Results {
            path: path.display().to_string(),
            source,
        }
    }

    /// A new, empty file (an existing one is replaced), locked for this writer.
    pub fn create(path: &Path) -> Result<Self> {
        ResultsFile::claim(path)?.begin()
    }

    /// The file locked for this writer but left as it is, before a launch: a file another
    /// process writes stops the launch before anything is published, and a launch that fails
    /// leaves an existing file untouched and removes one it made ([`Claimed::abandon`]).
    pub fn claim(path: &Path) -> Result<Claimed> {
        let made = !path.exists();
        create_parent(path)?;
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(path)
            .map_err(Self::error(path))?;
        if let Err(error) = lock(&file, path) {
            if made {
                let _ = std::fs::remove_file(path);
            }
            return Err(error);
        }
        Ok(Claimed {
            path: path.to_path_buf(),
            file,
            made,
        })
    }

    /// The file as a previous writer of `run` left it, to be continued: its complete lines
    /// are kept and their jobs not written again; a last line cut short (its writer was killed
    /// mid-line) is removed. A line that is not a result of `run` is an error naming the file
    /// and line, and so is a file another process is writing (the launcher, another attach).
    pub fn resume(path: &Path, run: &RunId) -> Result<Self> {
        create_parent(path)?;
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(path)
            .map_err(Self::error(path))?;
        lock(&file, path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(Self::error(path))?;
        // Bytes, not text: a cut-off last line may end inside a character.
        let complete = bytes
            .iter()
            .rposition(|&byte| byte == b'\n')
            .map_or(0, |end| end + 1);
        let mut written = HashSet::new();
        for (number, line) in bytes[..complete].split(|&byte| byte == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let invalid = |why: String| {
                Self::error(path)(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("line {}: {why}", number + 1),
                ))
            };
            let result: JobResult = serde_json::from_slice(line)
                .map_err(|error| invalid(format!("not a job result: {error}")))?;
            if result.id != JobId::of(run, result.index) {
                return Err(invalid(format!(
                    "job {} is not run {run}'s: write this run's results to another file",
                    result.index
                )));
            }
            written.insert(result.index);
        }
        file.set_len(complete as u64).map_err(Self::error(path))?;
        file.seek(SeekFrom::End(0)).map_err(Self::error(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            written,
        })
    }

    /// Adds the job's line, unless the file holds one for its job already (a redelivered
    /// job's second result, or a line a previous writer left).
    pub fn write(&mut self, result: &JobResult) -> Result<()> {
        if !self.written.insert(result.index) {
            return Ok(());
        }
        // Agents hide their secrets in results; this hides those read in this process too.
        let line = serde_json::to_string(result).map_err(std::io::Error::from);
        line.and_then(|line| {
            self.out
                .write_all(armada_core::redact_secrets(&line).as_bytes())
                .and_then(|()| self.out.write_all(b"\n"))
        })
        .map_err(Self::error(&self.path))
    }

    /// Writes buffered lines through, so that a reader of the file sees them.
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(Self::error(&self.path))
    }

    /// Flushes and releases the file's lock; a write error surfaces here, not in a drop.
    pub fn finish(mut self) -> Result<()> {
        self.flush()
    }
}

/// Takes the file for this process: two writers of one results file would interleave lines.
fn lock(file: &File, path: &Path) -> Result<()> {
    file.try_lock().map_err(|error| {
        let why = match error {
            std::fs::TryLockError::WouldBlock => std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                "another process is writing it (the run's launcher, or another attach)",
            ),
            std::fs::TryLockError::Error(error) => error,
        };
        ResultsFile::error(path)(why)
    })
}

/// A results file locked for a launch that has not published yet.
pub struct Claimed {
    path: PathBuf,
    file: File,
    /// Whether the claim created the file.
    made: bool,
}

impl Claimed {
    /// Empties the file for the launched run's results.
    pub fn begin(self) -> Result<ResultsFile> {
        self.file
            .set_len(0)
            .map_err(ResultsFile::error(&self.path))?;
        Ok(ResultsFile {
            path: self.path,
            out: BufWriter::new(self.file),
            written: HashSet::new(),
        })
    }

    /// Gives the file up after a launch that failed: removed if the claim made it, untouched
    /// otherwise.
    pub fn abandon(self) {
        if self.made {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn create_parent(path: &Path) -> Result<()> {
    match path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        Some(parent) => std::fs::create_dir_all(parent).map_err(ResultsFile::error(path)),
        None => Ok(()),
    }
}

//! `results.jsonl`, written as a run goes: one line per job, whoever writes it.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use armada_core::wire::JobResult;

use crate::{Error, Result};

/// `results.jsonl`: one JSON line per job, in the order jobs ended. A job already in the file
/// is not written again, so a file resumed by `attach` after its launcher died ends with
/// exactly one line per job.
pub(crate) struct ResultsFile {
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

    /// A new, empty file (an existing one is replaced).
    pub(crate) fn create(path: &Path) -> Result<Self> {
        create_parent(path)?;
        let file = File::create(path).map_err(Self::error(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            written: HashSet::new(),
        })
    }

    /// The file as a previous writer left it, to be continued: its complete lines are kept and
    /// their jobs not written again; a last line cut short (its writer was killed mid-line) is
    /// removed. A line that is not a job result is an error naming the file and line.
    pub(crate) fn resume(path: &Path) -> Result<Self> {
        create_parent(path)?;
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(error) => return Err(Self::error(path)(error)),
        };
        let complete = text.rfind('\n').map_or(0, |end| end + 1);
        let mut written = HashSet::new();
        for (number, line) in text[..complete].lines().enumerate() {
            let result: JobResult = serde_json::from_str(line).map_err(|error| {
                Self::error(path)(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("line {} is not a job result: {error}", number + 1),
                ))
            })?;
            written.insert(result.index);
        }
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(path)
            .map_err(Self::error(path))?;
        file.set_len(complete as u64).map_err(Self::error(path))?;
        let mut out = BufWriter::new(file);
        std::io::Seek::seek(out.get_mut(), std::io::SeekFrom::End(0)).map_err(Self::error(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            out,
            written,
        })
    }

    pub(crate) fn write(&mut self, result: &JobResult) -> Result<()> {
        if !self.written.insert(result.index) {
            return Ok(());
        }
        serde_json::to_writer(&mut self.out, result)
            .map_err(std::io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(Self::error(&self.path))
    }

    pub(crate) fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(Self::error(&self.path))
    }

    pub(crate) fn finish(mut self) -> Result<()> {
        self.flush()
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
